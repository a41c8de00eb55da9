//! Inlined copies of functions, and where to probe them.
//!
//! The gc compiler inlines small functions (`fmt.Println` in a hello world has no symbol at all).
//! The pclntab still names every inlined call: `PCDATA_InlTreeIndex` maps each PC of the caller to
//! a node of its inline tree (`FUNCDATA_InlTree`), which names the inlined function and the call it
//! stands for. Both survive stripping. A copy's code is the set of PCs whose node, or one of whose
//! ancestors, is that copy's node; it may be split into several ranges.
//!
//! A copy is entered where the caller's code reaches it without having been through it, and left
//! wherever control goes from its code to outside it: past its end, or by a branch out. A piece
//! of the copy that the compiler placed after the copy's exit (a spill of its result among the
//! caller's code) is reached only through the copy, so it is neither (see
//! [`x86_64_inline_sites`]). Both are found by decoding the caller, so every probe is on an
//! instruction boundary. Probing the exits' targets (rather than the branches) needs no flag
//! evaluation: reaching them means the copy was left.
pub mod dwarf;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic};

use super::{
    Arch, BinaryIndex, DisasmError, elf::Elf, gofunc, pclntab::Pclntab, pcvalue::LineTable,
};

/// One inlined copy of a function inside another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinedCopy {
    /// The inlined function, e.g. `fmt.Println`.
    pub name: String,
    /// The function whose machine code holds the copy.
    pub caller: String,
    pub caller_addr: u64,
    /// Where the inlined call is written (the caller's source).
    pub call_file: String,
    pub call_line: u32,
    /// The PC that stands for the call in the caller's code (the inline tree's `parentPc`, as
    /// the runtime uses it to unwind inlined frames): its frames are those of the call, the
    /// caller's own inlined frames included. None from DWARF, which does not say.
    pub call_pc: Option<u64>,
    /// The copy's code, as `[start, end)` virtual addresses, sorted.
    pub ranges: Vec<(u64, u64)>,
}

/// Where to probe one inlined copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InlineSites {
    /// Instructions of the copy that control reaches from outside it.
    pub entries: Vec<u64>,
    /// Instructions outside the copy that control reaches from inside it.
    pub exits: Vec<u64>,
    /// Indirect jumps inside the copy: where they go is unknown, so leaving through one is not
    /// seen (the open entry is then discarded later, never mis-paired).
    pub indirect_jumps: usize,
}

impl BinaryIndex {
    /// Every inlined copy of a function whose name satisfies `wanted`: from the pclntab's inline
    /// trees (Go ≥ 1.18, also in stripped binaries), else from DWARF `DW_TAG_inlined_subroutine`
    /// (older Go, or `go:func.*` not found). Empty when neither is readable.
    pub fn inlined_copies(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<InlinedCopy> {
        self.pclntab_inlined_copies(wanted)
            .unwrap_or_else(|| self.dwarf_inlined_copies(wanted))
    }

    /// Inlined copies from DWARF alone; empty without DWARF (see [`dwarf`]).
    pub fn dwarf_inlined_copies(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<InlinedCopy> {
        dwarf::inlined_copies(self.bytes(), wanted).unwrap_or_default()
    }

    /// Inlined copies from the pclntab's inline trees alone; `None` when the binary has none
    /// that goprobe reads (before Go 1.18, or `go:func.*` not found).
    pub fn pclntab_inlined_copies(
        &self,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Option<Vec<InlinedCopy>> {
        let info = self.pclntab?;
        let elf = Elf::parse(self.bytes()).ok()?;
        let (pcln_vaddr, pcln, _) = elf.find_pclntab()?;
        if pcln_vaddr != info.vaddr {
            return None;
        }
        let tab = Pclntab::parse(pcln).ok()?;
        let gofunc = gofunc::find(
            &elf,
            &tab,
            pcln,
            pcln_vaddr,
            info.text_start,
            self.go_version.as_deref(),
        )?;
        let table = LineTable::parse(pcln, info.text_start).ok()?;
        let table = table.with_gofunc(gofunc);
        if !table.any_name(wanted) {
            return Some(Vec::new());
        }
        let mut copies = Vec::new();

        for f in table.func_refs() {
            let runs = table.inline_index_runs(&f);
            if runs.iter().all(|&(_, _, ix)| ix < 0) {
                continue;
            }
            // Each node's name and call offset, and its parent node (the node at its call).
            let mut nodes: HashMap<i32, Option<(String, u64, i32)>> = HashMap::new();
            let mut node = |ix: i32| -> Option<(String, u64, i32)> {
                nodes
                    .entry(ix)
                    .or_insert_with(|| {
                        let (name, parent_pc) = table.inline_node(&f, ix)?;
                        let parent = table.inline_index_at(&f, f.entry + parent_pc).unwrap_or(-1);
                        Some((
                            String::from_utf8_lossy(name).into_owned(),
                            parent_pc,
                            parent,
                        ))
                    })
                    .clone()
            };
            // The ranges of every wanted node: a run belongs to its node and all its ancestors.
            let mut ranges: BTreeMap<i32, Vec<(u64, u64)>> = BTreeMap::new();
            for &(start, end, ix) in &runs {
                let mut at = ix;
                for _ in 0..64 {
                    if at < 0 {
                        break;
                    }
                    let Some((name, _, parent)) = node(at) else {
                        break;
                    };
                    if wanted(&name) {
                        ranges.entry(at).or_default().push((start, end));
                    }
                    if parent == at {
                        break;
                    }
                    at = parent;
                }
            }
            if ranges.is_empty() {
                continue;
            }
            let caller = table
                .name(&f)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            for (ix, mut spans) in ranges {
                let Some((name, parent_pc, _)) = node(ix) else {
                    continue;
                };
                spans.sort_unstable();
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
                for (s, e) in spans {
                    match merged.last_mut() {
                        Some(last) if s <= last.1 => last.1 = last.1.max(e),
                        _ => merged.push((s, e)),
                    }
                }
                let (file, line) = table
                    .file_line(&f, f.entry + parent_pc)
                    .map(|(file, line)| (String::from_utf8_lossy(file).into_owned(), line))
                    .unwrap_or_default();
                copies.push(InlinedCopy {
                    name,
                    caller: caller.clone(),
                    caller_addr: f.entry,
                    call_file: file,
                    call_line: u32::try_from(line).unwrap_or(0),
                    call_pc: Some(f.entry + parent_pc),
                    ranges: merged,
                });
            }
        }
        Some(copies)
    }

    /// Entry and exit sites of an inlined copy, from decoding its caller.
    pub fn inline_sites(&self, copy: &InlinedCopy) -> Result<InlineSites, DisasmError> {
        let caller = self
            .function_at(copy.caller_addr)
            .ok_or(DisasmError::NoCode {
                addr: copy.caller_addr,
            })?;
        let code = self
            .function_code(caller)
            .ok_or(DisasmError::NoCode { addr: caller.addr })?;
        Ok(match self.arch {
            Arch::X86_64 => x86_64_inline_sites(code, caller.addr, &copy.ranges),
            Arch::Aarch64 => aarch64_inline_sites(code, caller.addr, &copy.ranges),
        })
    }
}

/// The boundaries of the code `ranges` inside the function `code` at `addr`.
///
/// The compiler may place a piece of a copy after the copy has been left: etcd's
/// `(*KeyValue).MarshalTo` (Go 1.19) has a copy of `encodeVarintKv` whose `i+1` and a spill of its
/// result sit among the caller's code after the copy's exit. Reaching such a piece is not a new
/// execution of the copy, so entries and exits come from the caller's control-flow graph:
/// * roots: the caller's first instruction, and every instruction without a direct predecessor
///   (targets of jump tables or other indirect jumps, which decoding cannot follow), except
///   padding: NOPs that only lead to an instruction a branch goes to (the alignment of a branch
///   target after a jump). A NOP that leads to code nothing else reaches is not padding: Go marks
///   where an inlined body begins with a one-byte NOP, and a `switch` case that a jump table
///   reaches may start with one;
/// * a copy instruction is an entry when it is a root, or when a caller instruction that leads to
///   it is reachable from a root without passing through the copy (a caller loop around the copy
///   comes back to such an entry, so each turn is an execution);
/// * the copy's live code is what control reaches from its entries while staying inside it; the
///   exits are the caller instructions that live code goes to. A piece reached only after the copy
///   was left is not live: it has no entry and no exit.
pub fn x86_64_inline_sites(code: &[u8], addr: u64, ranges: &[(u64, u64)]) -> InlineSites {
    let end = addr + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    // (pc, straight-line?, successors) of every instruction, in order.
    let mut flow: Vec<(u64, bool, [Option<u64>; 2])> = Vec::new();
    let mut indirect_at = BTreeSet::new();
    let mut nop = Vec::new();
    let mut branch_targets = BTreeSet::new();
    for ins in &mut decoder {
        if ins.is_invalid() {
            continue;
        }
        let pc = ins.ip();
        let next = Some(ins.next_ip());
        let target = Some(ins.near_branch_target()).filter(|&t| t != 0);
        let (straight, succ) = match ins.flow_control() {
            FlowControl::Next
            | FlowControl::Call
            | FlowControl::IndirectCall
            | FlowControl::XbeginXabortXend => (true, [next, None]),
            FlowControl::UnconditionalBranch => {
                branch_targets.extend(target);
                (false, [target, None])
            }
            FlowControl::ConditionalBranch => {
                branch_targets.extend(target);
                (false, [next, target])
            }
            FlowControl::IndirectBranch => {
                indirect_at.insert(pc);
                (false, [None, None])
            }
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => {
                (false, [None, None])
            }
        };
        nop.push(ins.mnemonic() == Mnemonic::Nop);
        flow.push((pc, straight, succ));
    }
    sites_from_flow(addr, end, flow, &indirect_at, &nop, &branch_targets, ranges)
}

/// [`x86_64_inline_sites`] for arm64 code: the same analysis over the control flow that
/// [`crate::disasm::aarch64_flow`] decodes (literal-pool words are not instructions).
pub fn aarch64_inline_sites(code: &[u8], addr: u64, ranges: &[(u64, u64)]) -> InlineSites {
    let end = addr + code.len() as u64;
    let f = crate::disasm::aarch64_flow(code, addr);
    sites_from_flow(
        addr,
        end,
        f.flow,
        &f.indirect_at,
        &f.nop,
        &f.branch_targets,
        ranges,
    )
}

/// The entries and exits of the copy at `ranges`, from the caller's decoded control flow: `flow`
/// holds `(pc, straight-line?, successors)` of every instruction in order, `nop` whether each is
/// a NOP, `indirect_at` the indirect jumps, `branch_targets` every direct branch target.
fn sites_from_flow(
    addr: u64,
    end: u64,
    mut flow: Vec<(u64, bool, [Option<u64>; 2])>,
    indirect_at: &BTreeSet<u64>,
    nop: &[bool],
    branch_targets: &BTreeSet<u64>,
    ranges: &[(u64, u64)],
) -> InlineSites {
    // Only real instruction starts of this function are probe sites: other successors (a branch
    // to another function, a fall-through off the end) are dropped.
    let index: HashMap<u64, usize> = flow.iter().enumerate().map(|(i, f)| (f.0, i)).collect();
    for (_, _, succ) in &mut flow {
        for s in succ.iter_mut() {
            if s.is_some_and(|t| t >= end || t < addr || !index.contains_key(&t)) {
                *s = None;
            }
        }
    }
    let ranges = close_gaps(ranges, &flow);
    let inside: Vec<bool> = flow
        .iter()
        .map(|&(pc, _, _)| ranges.iter().any(|&(s, e)| pc >= s && pc < e))
        .collect();
    let succs = |i: usize| flow[i].2.into_iter().flatten().map(|t| index[&t]);

    let mut has_pred = vec![false; flow.len()];
    for i in 0..flow.len() {
        for j in succs(i) {
            has_pred[j] = true;
        }
    }
    let jumped_to = |j: usize| branch_targets.contains(&flow[j].0);
    let padding = |i: usize| {
        let after = (i..flow.len()).find(|&j| !nop[j] || jumped_to(j));
        nop[i] && after.is_none_or(jumped_to)
    };
    let roots = (0..flow.len()).filter(|&i| i == 0 || (!has_pred[i] && !padding(i)));

    // The caller's code reachable from its roots without entering the copy, and the copy
    // instructions it leads to.
    let mut entries = BTreeSet::new();
    let mut seen = vec![false; flow.len()];
    let mut todo = Vec::new();
    for r in roots {
        if inside[r] {
            entries.insert(r);
        } else {
            seen[r] = true;
            todo.push(r);
        }
    }
    while let Some(i) = todo.pop() {
        for j in succs(i) {
            if inside[j] {
                entries.insert(j);
            } else if !seen[j] {
                seen[j] = true;
                todo.push(j);
            }
        }
    }

    // The copy's live code, and where it leaves.
    let mut live = vec![false; flow.len()];
    let mut todo: Vec<usize> = entries.iter().copied().collect();
    for &i in &todo {
        live[i] = true;
    }
    let mut exits = BTreeSet::new();
    while let Some(i) = todo.pop() {
        for j in succs(i) {
            if !inside[j] {
                exits.insert(flow[j].0);
            } else if !live[j] {
                live[j] = true;
                todo.push(j);
            }
        }
    }
    let indirect_jumps = (0..flow.len())
        .filter(|&i| live[i] && indirect_at.contains(&flow[i].0))
        .count();
    InlineSites {
        entries: entries.into_iter().map(|i| flow[i].0).collect(),
        exits: exits.into_iter().collect(),
        indirect_jumps,
    }
}

/// The scheduler interleaves caller code with an inlined copy's (`fmt.Println`'s argument setup,
/// then the caller's loop increment, then the call): the copy's code comes in several ranges
/// with straight-line caller code between them. Leaving a range into such a gap and coming back
/// is not leaving the copy, so a gap is taken into the copy when every instruction in it goes
/// straight on (no branch) and no branch from outside the copy lands in it.
fn close_gaps(ranges: &[(u64, u64)], flow: &[(u64, bool, [Option<u64>; 2])]) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    for (start, end) in sorted {
        let Some(last) = merged.last_mut() else {
            merged.push((start, end));
            continue;
        };
        let gap = last.1..start;
        let straight = flow
            .iter()
            .filter(|(pc, _, _)| gap.contains(pc))
            .all(|&(_, straight, _)| straight);
        let in_copy_or_gap =
            |pc: u64| gap.contains(&pc) || ranges.iter().any(|&(s, e)| pc >= s && pc < e);
        let landed_from_outside = flow.iter().any(|&(pc, _, succ)| {
            !in_copy_or_gap(pc) && succ.iter().flatten().any(|t| gap.contains(t))
        });
        if start <= last.1 || (straight && !landed_from_outside) {
            last.1 = last.1.max(end);
        } else {
            merged.push((start, end));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_of_a_copy() {
        // 0x1000: nop           (caller)
        // 0x1001: mov eax, 1    (copy) <- entered by fall-through
        // 0x1006: jne 0x100c    (copy) -> branch out: exit at 0x100c
        // 0x1008: nop           (copy)
        // 0x1009: nop           (copy)
        // 0x100a: nop           (copy)
        // 0x100b: nop           (copy)  -> falls through to 0x100c
        // 0x100c: ret           (caller)
        let code = [
            0x90, 0xb8, 1, 0, 0, 0, 0x75, 0x04, 0x90, 0x90, 0x90, 0x90, 0xc3,
        ];
        let sites = x86_64_inline_sites(&code, 0x1000, &[(0x1001, 0x100c)]);
        assert_eq!(sites.entries, vec![0x1001]);
        assert_eq!(sites.exits, vec![0x100c]);
        assert_eq!(sites.indirect_jumps, 0);
    }

    #[test]
    fn caller_code_scheduled_inside_a_copy_is_not_an_exit() {
        // Go 1.21's main.main: Println's argument setup, the caller's loop increment, then the
        // rest of Println (the call):
        // 0x3000: nop            (caller)
        // 0x3001: nop            (copy, range 1)
        // 0x3002: nop            (caller code scheduled in between)
        // 0x3003: nop; nop       (copy, range 2)
        // 0x3005: ret            (caller)
        let code = [0x90, 0x90, 0x90, 0x90, 0x90, 0xc3];
        let sites = x86_64_inline_sites(&code, 0x3000, &[(0x3001, 0x3002), (0x3003, 0x3005)]);
        assert_eq!(sites.entries, vec![0x3001]);
        assert_eq!(sites.exits, vec![0x3005]);
        // But a gap that a branch from outside lands in is the caller's own code. (A `jne`: after
        // a `jmp`, the NOP at 0x4002 would be padding that never runs, not the copy's code.)
        // 0x4000: jne 0x4003     (caller, into the gap)
        // 0x4002: nop            (copy)
        // 0x4003: nop            (gap)
        // 0x4004: nop            (copy)
        // 0x4005: ret
        let code = [0x75, 0x01, 0x90, 0x90, 0x90, 0xc3];
        let sites = x86_64_inline_sites(&code, 0x4000, &[(0x4002, 0x4003), (0x4004, 0x4005)]);
        assert_eq!(sites.exits, vec![0x4003, 0x4005]);
    }

    #[test]
    fn branch_into_the_middle_is_an_entry() {
        // 0x2000: jmp 0x2004     (caller) -> enters the copy at its second instruction
        // 0x2002: nop; nop       (copy)
        // 0x2004: nop            (copy)
        // 0x2005: ret            (caller)
        let code = [0xeb, 0x02, 0x90, 0x90, 0x90, 0xc3];
        let sites = x86_64_inline_sites(&code, 0x2000, &[(0x2002, 0x2005)]);
        assert_eq!(sites.entries, vec![0x2004]);
        assert_eq!(sites.exits, vec![0x2005]);
    }

    #[test]
    fn a_piece_placed_after_the_copy_was_left_is_not_the_copy() {
        // etcd 3.4's (*KeyValue).MarshalTo (Go 1.19): a copy of encodeVarintKv loops, is left,
        // then two one-instruction pieces of it (its `i+1`, a spill of its result) run among
        // the caller's code. Reaching them is the same execution, not new ones.
        // 0x5000: nop                    (caller)
        // 0x5001: shr rdx, 7             (copy) <- entered by fall-through; loop head
        // 0x5005: cmp rdx, 0x7f          (copy)
        // 0x5009: ja 0x5001              (copy)  loop back to its first instruction
        // 0x500b: cmp rcx, rsi           (caller: the copy was left)
        // 0x500e: jbe 0x501e             (caller)
        // 0x5010: lea r9, [rsi+1]        (copy, a piece entered from the caller's code)
        // 0x5014: cmp rdi, r9            (caller)
        // 0x5017: je 0x501e              (caller)
        // 0x5019: mov [rsp+0x20], rsi    (copy, another such piece: the spill)
        // 0x501e: ret                    (caller)
        let code = [
            0x90, 0x48, 0xc1, 0xea, 0x07, 0x48, 0x83, 0xfa, 0x7f, 0x77, 0xf6, 0x48, 0x39, 0xf1,
            0x76, 0x0e, 0x4c, 0x8d, 0x4e, 0x01, 0x4c, 0x39, 0xcf, 0x74, 0x05, 0x48, 0x89, 0x74,
            0x24, 0x20, 0xc3,
        ];
        let ranges = [(0x5001, 0x500b), (0x5010, 0x5014), (0x5019, 0x501e)];
        let sites = x86_64_inline_sites(&code, 0x5000, &ranges);
        assert_eq!(sites.entries, vec![0x5001]);
        assert_eq!(sites.exits, vec![0x500b]);

        // The same inside a loop of the caller (0x501e: jmp 0x5000 instead of the ret): the
        // loop comes back to the copy's entry, but the pieces are still reached only after the
        // copy was left.
        let mut looping = code.to_vec();
        looping.pop();
        looping.extend([0xeb, 0xe0]);
        let sites = x86_64_inline_sites(&looping, 0x5000, &ranges);
        assert_eq!(sites.entries, vec![0x5001]);
        assert_eq!(sites.exits, vec![0x500b]);
    }

    #[test]
    fn a_loop_of_the_caller_around_the_copy_enters_it_each_turn() {
        // 0x6000: nop            (caller)
        // 0x6001: inc rax        (copy)   <- from 0x6000, and from the caller's loop
        // 0x6004: dec rcx        (caller)
        // 0x6007: jne 0x6001     (caller)
        // 0x6009: ret
        let code = [0x90, 0x48, 0xff, 0xc0, 0x48, 0xff, 0xc9, 0x75, 0xf8, 0xc3];
        let sites = x86_64_inline_sites(&code, 0x6000, &[(0x6001, 0x6004)]);
        assert_eq!(sites.entries, vec![0x6001]);
        assert_eq!(sites.exits, vec![0x6004]);
    }

    #[test]
    fn targets_of_indirect_jumps_are_roots_and_padding_is_not() {
        // A jump table's target has no direct predecessor: it starts code of its own.
        // 0x7000: jmp rax        (caller)
        // 0x7002: nop            (caller: a target of the jump, Go's mark of an inlined body)
        // 0x7003: mov ecx, edx   (caller)
        // 0x7005: inc rax        (copy)
        // 0x7008: jmp rax        (caller)
        // 0x700a: inc rax        (copy: a target of the jump)
        // 0x700d: ret
        let code = [
            0xff, 0xe0, 0x90, 0x89, 0xd1, 0x48, 0xff, 0xc0, 0xff, 0xe0, 0x48, 0xff, 0xc0, 0xc3,
        ];
        let sites = x86_64_inline_sites(&code, 0x7000, &[(0x7005, 0x7008), (0x700a, 0x700d)]);
        assert_eq!(sites.entries, vec![0x7005, 0x700a]);
        assert_eq!(sites.exits, vec![0x7008, 0x700d]);

        // Padding before a branch target does not make a piece placed after the copy was left
        // reachable.
        // 0x9000: nop                (caller)
        // 0x9001: inc rax            (copy)
        // 0x9004: test rcx, rcx      (caller: the copy was left)
        // 0x9007: jne 0x900c         (caller)
        // 0x9009: ret
        // 0x900a: xchg ax, ax        (padding)
        // 0x900c: mov [rsp+8], rax   (copy, reached only from 0x9007)
        // 0x9011: ret
        let code = [
            0x90, 0x48, 0xff, 0xc0, 0x48, 0x85, 0xc9, 0x75, 0x03, 0xc3, 0x66, 0x90, 0x48, 0x89,
            0x44, 0x24, 0x08, 0xc3,
        ];
        let sites = x86_64_inline_sites(&code, 0x9000, &[(0x9001, 0x9004), (0x900c, 0x9011)]);
        assert_eq!(sites.entries, vec![0x9001]);
        assert_eq!(sites.exits, vec![0x9004]);
    }
}

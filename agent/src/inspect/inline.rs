//! Inlined copies of functions, and where to probe them.
//!
//! The gc compiler inlines small functions (`fmt.Println` in a hello world has no symbol at all).
//! The pclntab still names every inlined call: `PCDATA_InlTreeIndex` maps each PC of the caller to
//! a node of its inline tree (`FUNCDATA_InlTree`), which names the inlined function and the call it
//! stands for. Both survive stripping. A copy's code is the set of PCs whose node, or one of whose
//! ancestors, is that copy's node; it may be split into several ranges.
//!
//! A copy is entered where control reaches its code from outside it, and left wherever control
//! goes from its code to outside it: past its end, or by a branch out. Both are found by
//! decoding the caller, so every probe is on an instruction boundary. Probing the exits' targets
//! (rather than the branches) needs no flag evaluation: reaching them means the copy was left.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{Decoder, DecoderOptions, FlowControl};

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

    /// Inlined copies from DWARF alone; empty without DWARF (see [`super::dwarf`]).
    pub fn dwarf_inlined_copies(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<InlinedCopy> {
        super::dwarf::inlined_copies(self.bytes(), wanted).unwrap_or_default()
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
        if self.arch != Arch::X86_64 {
            return Err(DisasmError::UnsupportedArch(self.arch));
        }
        let caller = self
            .function_at(copy.caller_addr)
            .ok_or(DisasmError::NoCode {
                addr: copy.caller_addr,
            })?;
        let code = self
            .function_code(caller)
            .ok_or(DisasmError::NoCode { addr: caller.addr })?;
        Ok(x86_64_inline_sites(code, caller.addr, &copy.ranges))
    }
}

/// The boundaries of the code `ranges` inside the function `code` at `addr`.
pub fn x86_64_inline_sites(code: &[u8], addr: u64, ranges: &[(u64, u64)]) -> InlineSites {
    let end = addr + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    // (pc, straight-line?, successors) of every instruction, in order.
    let mut flow: Vec<(u64, bool, [Option<u64>; 2])> = Vec::new();
    let mut indirect_at = Vec::new();
    let mut starts = BTreeSet::new();
    for ins in &mut decoder {
        if ins.is_invalid() {
            continue;
        }
        let pc = ins.ip();
        starts.insert(pc);
        let next = Some(ins.next_ip());
        let target = Some(ins.near_branch_target()).filter(|&t| t != 0);
        let (straight, succ) = match ins.flow_control() {
            FlowControl::Next
            | FlowControl::Call
            | FlowControl::IndirectCall
            | FlowControl::XbeginXabortXend => (true, [next, None]),
            FlowControl::UnconditionalBranch => (false, [target, None]),
            FlowControl::ConditionalBranch => (false, [next, target]),
            FlowControl::IndirectBranch => {
                indirect_at.push(pc);
                (false, [None, None])
            }
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => {
                (false, [None, None])
            }
        };
        flow.push((pc, straight, succ));
    }
    let ranges = close_gaps(ranges, &flow);
    let inside = |pc: u64| ranges.iter().any(|&(s, e)| pc >= s && pc < e);
    let mut entries = BTreeSet::new();
    let mut exits = BTreeSet::new();
    let indirect_jumps = indirect_at.iter().filter(|&&pc| inside(pc)).count();
    for &(pc, _, succ) in &flow {
        for s in succ.into_iter().flatten() {
            // Only real instruction starts of this function are probe sites.
            if s >= end || s < addr || !starts.contains(&s) {
                continue;
            }
            match (inside(pc), inside(s)) {
                (true, false) => {
                    exits.insert(s);
                }
                (false, true) => {
                    entries.insert(s);
                }
                _ => {}
            }
        }
    }
    InlineSites {
        entries: entries.into_iter().collect(),
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
        // But a gap that a branch from outside lands in is the caller's own code.
        // 0x4000: jmp 0x4003     (caller, into the gap)
        // 0x4002: nop            (copy)
        // 0x4003: nop            (gap)
        // 0x4004: nop            (copy)
        // 0x4005: ret
        let code = [0xeb, 0x01, 0x90, 0x90, 0x90, 0xc3];
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
}

//! Go's per-PC tables: from a PC to its function, file:line and the inlined calls at that PC,
//! read from `.gopclntab` (and, for inline trees, the `go:func.*` data the pclntab points into),
//! with no DWARF. This is what stack symbolization needs.
//!
//! References: `src/debug/gosym/pclntab.go` (layouts, pcvalue tables, file tables) and the
//! runtime's own symbolizer, `src/runtime/symtab.go` (`funcline1`, `funcdata`, `pcvalue`) and
//! `src/runtime/symtabinl.go` (the inline unwinder). Go's `runtime.CallersFrames` is the answer
//! this module is tested against.
//!
//! Kept apart from `pclntab.rs` (names and ranges only) so both can evolve; the header fields
//! read here are the ones `debug/gosym` reads.
//!
//! The input is untrusted: every read is bounds-checked and returns `None` rather than panicking,
//! and every loop over a table is bounded by the table's length.

use super::pclntab::{PclnError, PclnVersion, read_uint};

/// `PCDATA_InlTreeIndex` and `FUNCDATA_InlTree` (the same from Go 1.12 through 1.27).
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// Inlining is never this deep; a longer chain means a corrupt tree (it could loop).
const MAX_INLINE_DEPTH: usize = 64;

/// One source-level frame at a PC. Inlined frames come first (innermost), the physical function
/// last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame<'a> {
    pub function: &'a [u8],
    pub file: &'a [u8],
    pub line: i32,
    /// This frame was inlined into the next one.
    pub inlined: bool,
}

/// A function's record in the table, located by [`LineTable::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncRef {
    pub entry: u64,
    pub end: u64,
    /// Offset of the `_func` record in the function data.
    funcoff: usize,
}

/// The tables of one pclntab, borrowed.
#[derive(Debug, Clone)]
pub struct LineTable<'a> {
    version: PclnVersion,
    big_endian: bool,
    quantum: u32,
    ptr_size: usize,
    nfunc: usize,
    functab: &'a [u8],
    funcdata: &'a [u8],
    funcnametab: &'a [u8],
    cutab: &'a [u8],
    filetab: &'a [u8],
    pctab: &'a [u8],
    text_start: u64,
    /// The bytes at `go:func.*` (Go 1.18+), which inline trees are offsets into.
    gofunc: Option<&'a [u8]>,
}

impl<'a> LineTable<'a> {
    /// Parse the header of the pclntab in `data`. `text_start` is `runtime.text` (ignored before
    /// Go 1.18, whose tables hold absolute PCs).
    pub fn parse(data: &'a [u8], text_start: u64) -> Result<Self, PclnError> {
        let tab = super::pclntab::Pclntab::parse(data)?;
        let version = tab.version();
        let big_endian = tab.big_endian();
        let ptr_size = usize::from(tab.ptr_size());
        let word = |i: usize| -> Result<u64, PclnError> {
            read_uint(data, 8 + i * ptr_size, ptr_size, big_endian)
                .ok_or_else(|| PclnError(format!("header truncated at word {i}")))
        };
        let sub = |name: &str, off: u64| -> Result<&'a [u8], PclnError> {
            usize::try_from(off)
                .ok()
                .and_then(|o| data.get(o..))
                .ok_or_else(|| PclnError(format!("{name} offset {off:#x} is outside the table")))
        };
        let field_size = if version >= PclnVersion::Go118 {
            4
        } else {
            ptr_size
        };
        let nfunc = tab.len();
        let functab_len = (2 * nfunc + 1) * field_size; // checked by Pclntab::parse
        let (funcnametab, cutab, filetab, pctab, funcdata) = match version {
            PclnVersion::Go118 | PclnVersion::Go120 => (
                sub("funcnametab", word(3)?)?,
                sub("cutab", word(4)?)?,
                sub("filetab", word(5)?)?,
                sub("pctab", word(6)?)?,
                sub("pclntable", word(7)?)?,
            ),
            PclnVersion::Go116 => (
                sub("funcnametab", word(2)?)?,
                sub("cutab", word(3)?)?,
                sub("filetab", word(4)?)?,
                sub("pctab", word(5)?)?,
                sub("pclntable", word(6)?)?,
            ),
            PclnVersion::Go12 => {
                // One table: names, pc tables and the file table are all offsets from its start;
                // the file table's offset follows the functab.
                let functab = sub("functab", 8 + ptr_size as u64)?;
                let fileoff = read_uint(functab, functab_len, 4, big_endian)
                    .ok_or_else(|| PclnError("file table offset truncated".into()))?;
                (data, &[][..], sub("filetab", fileoff)?, data, data)
            }
        };
        let functab = match version {
            PclnVersion::Go12 => sub("functab", 8 + ptr_size as u64)?,
            _ => funcdata,
        };
        let functab = functab
            .get(..functab_len)
            .ok_or_else(|| PclnError("functab truncated".into()))?;
        Ok(Self {
            version,
            big_endian,
            quantum: u32::from(tab.quantum()),
            ptr_size,
            nfunc,
            functab,
            funcdata,
            funcnametab,
            cutab,
            filetab,
            pctab,
            text_start: if version >= PclnVersion::Go118 {
                text_start
            } else {
                0
            },
            gofunc: None,
        })
    }

    /// Give the table the bytes at `go:func.*`, so inline trees can be read (Go 1.18+).
    pub fn with_gofunc(mut self, gofunc: &'a [u8]) -> Self {
        if self.version >= PclnVersion::Go118 {
            self.gofunc = Some(gofunc);
        }
        self
    }

    pub fn version(&self) -> PclnVersion {
        self.version
    }

    pub fn has_inline_trees(&self) -> bool {
        self.gofunc.is_some()
    }

    fn u32_at(&self, data: &[u8], at: usize) -> Option<u32> {
        read_uint(data, at, 4, self.big_endian).map(|v| v as u32)
    }

    fn field_size(&self) -> usize {
        if self.version >= PclnVersion::Go118 {
            4
        } else {
            self.ptr_size
        }
    }

    fn functab_field(&self, i: usize) -> Option<u64> {
        let size = self.field_size();
        read_uint(self.functab, i.checked_mul(size)?, size, self.big_endian)
    }

    fn functab_pc(&self, i: usize) -> Option<u64> {
        let raw = self.functab_field(2 * i)?;
        if self.version >= PclnVersion::Go118 {
            self.text_start.checked_add(raw)
        } else {
            Some(raw)
        }
    }

    /// The function whose range holds `pc` (zero-size entries are skipped).
    pub fn find(&self, pc: u64) -> Option<FuncRef> {
        if self.nfunc == 0 {
            return None;
        }
        // The last i with entry(i) <= pc.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.functab_pc(mid)? <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        let entry = self.functab_pc(i)?;
        let end = self.functab_pc(i + 1)?;
        if pc >= end {
            return None;
        }
        let funcoff = usize::try_from(self.functab_field(2 * i + 1)?).ok()?;
        Some(FuncRef {
            entry,
            end,
            funcoff,
        })
    }

    /// Field `n` (1-based, after the entry) of a `_func` record: 1 nameOff, 4 pcsp, 5 pcfile,
    /// 6 pcln, 7 npcdata, 8 cuOffset (1.16+), as `debug/gosym` numbers them.
    fn func_field(&self, f: &FuncRef, n: usize) -> Option<u32> {
        let first = if self.version >= PclnVersion::Go118 {
            4
        } else {
            self.ptr_size
        };
        self.u32_at(self.funcdata, f.funcoff.checked_add(first + (n - 1) * 4)?)
    }

    /// Size of the fixed part of `_func`, after which the pcdata and funcdata arrays follow.
    fn func_header_size(&self) -> usize {
        match self.version {
            // entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset,
            // [startLine (1.20+)], funcID, flag, pad, nfuncdata.
            PclnVersion::Go120 => 4 + 8 * 4 + 4 + 4,
            PclnVersion::Go118 => 4 + 8 * 4 + 4,
            PclnVersion::Go116 => self.ptr_size + 8 * 4 + 4,
            PclnVersion::Go12 => self.ptr_size + 7 * 4 + 4,
        }
    }

    pub fn name(&self, f: &FuncRef) -> Option<&'a [u8]> {
        let off = self.func_field(f, 1)?;
        self.name_at(off)
    }

    fn name_at(&self, off: u32) -> Option<&'a [u8]> {
        let rest = self.funcnametab.get(usize::try_from(off).ok()?..)?;
        let nul = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..nul])
    }

    /// The value of the pc-value table at `off` (in pctab) for `target`, as the runtime's
    /// `pcvalue` computes it; None when there is no table or it does not cover `target`.
    fn pcvalue(&self, off: u32, entry: u64, target: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let mut p = self.pctab.get(usize::try_from(off).ok()?..)?;
        let mut val: i32 = -1;
        let mut pc = entry;
        let mut first = true;
        // Each step consumes at least two bytes, so the table's length bounds the loop.
        for _ in 0..=p.len() / 2 + 1 {
            let (uvdelta, used) = uvarint32(p)?;
            p = &p[used..];
            if uvdelta == 0 && !first {
                return None;
            }
            first = false;
            let vdelta = if uvdelta & 1 != 0 {
                !(uvdelta >> 1) as i32
            } else {
                (uvdelta >> 1) as i32
            };
            let (pcdelta, used) = uvarint32(p)?;
            p = &p[used..];
            pc = pc.checked_add(u64::from(pcdelta) * u64::from(self.quantum))?;
            val = val.wrapping_add(vdelta);
            if target < pc {
                return Some(val);
            }
        }
        None
    }

    /// The SP offset from the function's entry SP at `pc` (the `pcsp` table): 0 at the entry, and
    /// wherever the frame is not (or no longer) allocated.
    pub fn sp_delta(&self, f: &FuncRef, pc: u64) -> Option<i32> {
        self.pcvalue(self.func_field(f, 4)?, f.entry, pc)
    }

    fn pcdata_value(&self, f: &FuncRef, table: u32, pc: u64) -> Option<i32> {
        let npcdata = self.func_field(f, 7)?;
        if table >= npcdata {
            return None;
        }
        let at = f
            .funcoff
            .checked_add(self.func_header_size())?
            .checked_add(table as usize * 4)?;
        let off = self.u32_at(self.funcdata, at)?;
        self.pcvalue(off, f.entry, pc)
    }

    /// File and line at `pc` of function `f`.
    pub fn file_line(&self, f: &FuncRef, pc: u64) -> Option<(&'a [u8], i32)> {
        let line = self.pcvalue(self.func_field(f, 6)?, f.entry, pc)?;
        let fileno = self.pcvalue(self.func_field(f, 5)?, f.entry, pc)?;
        Some((self.file_name(f, fileno)?, line))
    }

    fn file_name(&self, f: &FuncRef, fileno: i32) -> Option<&'a [u8]> {
        let fileno = u32::try_from(fileno).ok()?;
        let off = match self.version {
            PclnVersion::Go12 => {
                // Entry 0 is the count; file numbers start at 1.
                if fileno == 0 {
                    return None;
                }
                let off = self.u32_at(self.filetab, fileno as usize * 4)?;
                return self.c_string(self.funcdata, off);
            }
            _ => {
                let cu = self.func_field(f, 8)?;
                let idx = cu.checked_add(fileno)? as usize;
                self.u32_at(self.cutab, idx.checked_mul(4)?)?
            }
        };
        if off == u32::MAX {
            return None;
        }
        self.c_string(self.filetab, off)
    }

    fn c_string(&self, table: &'a [u8], off: u32) -> Option<&'a [u8]> {
        let rest = table.get(usize::try_from(off).ok()?..)?;
        let nul = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..nul])
    }

    /// The inline tree entry `ix` of `f`: (name, parentPc) — Go 1.18+ only.
    fn inlined_call(&self, f: &FuncRef, ix: i32) -> Option<(&'a [u8], u64)> {
        let gofunc = self.gofunc?;
        let nfuncdata = *self
            .funcdata
            .get(f.funcoff.checked_add(self.func_header_size() - 1)?)?;
        if FUNCDATA_INL_TREE >= u32::from(nfuncdata) {
            return None;
        }
        let npcdata = self.func_field(f, 7)? as usize;
        let at = f
            .funcoff
            .checked_add(self.func_header_size())?
            .checked_add(npcdata.checked_mul(4)?)?
            .checked_add(FUNCDATA_INL_TREE as usize * 4)?;
        let off = self.u32_at(self.funcdata, at)?;
        if off == u32::MAX {
            return None;
        }
        // 1.20+: funcID u8, pad [3], nameOff i32, parentPc i32, startLine i32.
        // 1.18/1.19: parent i16, funcID u8, pad u8, file i32, line i32, func_ i32, parentPc i32.
        let (size, name_at, parent_pc_at) = match self.version {
            PclnVersion::Go120 => (16, 4, 8),
            _ => (20, 12, 16),
        };
        let entry = (off as usize).checked_add(usize::try_from(ix).ok()?.checked_mul(size)?)?;
        let name_off = self.u32_at(gofunc, entry + name_at)?;
        let parent_pc = self.u32_at(gofunc, entry + parent_pc_at)?;
        if i32::try_from(name_off).is_err() || u64::from(parent_pc) >= f.end - f.entry {
            return None;
        }
        Some((self.name_at(name_off)?, u64::from(parent_pc)))
    }

    /// The source frames at `pc`, innermost first: one per inlined call, then the function
    /// itself, each with its file and line, as `runtime.CallersFrames` reports them. Empty when
    /// `pc` is in no function of the table.
    ///
    /// `pc` is looked up as given: for a return address, pass the address of the call (`pc - 1`).
    pub fn frames(&self, pc: u64) -> Vec<SourceFrame<'a>> {
        let mut out = Vec::new();
        let Some(f) = self.find(pc) else {
            return out;
        };
        let Some(name) = self.name(&f) else {
            return out;
        };
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = self.file_line(&f, at).unwrap_or((b"?", 0));
            let call = if self.gofunc.is_some() {
                self.pcdata_value(&f, PCDATA_INL_TREE_INDEX, at)
                    .filter(|&ix| ix >= 0)
                    .and_then(|ix| self.inlined_call(&f, ix))
            } else {
                None
            };
            match call {
                Some((callee, parent_pc)) => {
                    out.push(SourceFrame {
                        function: callee,
                        file,
                        line,
                        inlined: true,
                    });
                    at = f.entry + parent_pc;
                }
                None => {
                    out.push(SourceFrame {
                        function: name,
                        file,
                        line,
                        inlined: false,
                    });
                    return out;
                }
            }
        }
        // A chain this deep is corrupt: keep what was read and end with the function itself.
        out.push(SourceFrame {
            function: name,
            file: b"?",
            line: 0,
            inlined: false,
        });
        out
    }

    /// Check that `gofunc` is plausible: every inline tree entry read through it, for a sample
    /// of functions, names a real function name and points inside its function. Returns how
    /// many entries were checked (0: nothing to check with), or None if one is implausible.
    pub fn check_gofunc(&self, sample: usize) -> Option<usize> {
        let gofunc = self.gofunc?;
        let mut checked = 0;
        let step = (self.nfunc / sample.max(1)).max(1);
        for i in (0..self.nfunc).step_by(step) {
            let (Some(entry), Some(end), Some(funcoff)) = (
                self.functab_pc(i),
                self.functab_pc(i + 1),
                self.functab_field(2 * i + 1),
            ) else {
                continue;
            };
            let f = FuncRef {
                entry,
                end,
                funcoff: usize::try_from(funcoff).ok()?,
            };
            let &nfuncdata = self.funcdata.get(f.funcoff + self.func_header_size() - 1)?;
            if u32::from(nfuncdata) <= FUNCDATA_INL_TREE {
                continue;
            }
            let npcdata = self.func_field(&f, 7)? as usize;
            let at = f.funcoff + self.func_header_size() + npcdata * 4 + 12;
            let off = self.u32_at(self.funcdata, at)?;
            if off == u32::MAX {
                continue;
            }
            if (off as usize) >= gofunc.len() {
                return None;
            }
            // Entry 0 always exists when the tree does.
            let (_, name_at, _) = match self.version {
                PclnVersion::Go120 => (16, 4, 8),
                _ => (20, 12, 16),
            };
            let name_off = self.u32_at(gofunc, off as usize + name_at)? as usize;
            // A name offset must point at the start of a name: after a NUL, or at 0.
            if name_off >= self.funcnametab.len()
                || (name_off > 0 && self.funcnametab[name_off - 1] != 0)
            {
                return None;
            }
            self.inlined_call(&f, 0)?;
            checked += 1;
        }
        Some(checked)
    }
}

/// A uvarint of at most 5 bytes (the tables hold u32 values); returns (value, bytes used).
fn uvarint32(p: &[u8]) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for (i, &b) in p.iter().enumerate().take(5) {
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Inline instances, for probing inlined copies of a function (see `inspect::inline`).
impl<'a> LineTable<'a> {
    /// Every function record of the table, in address order (zero-size entries skipped).
    pub fn func_refs(&self) -> impl Iterator<Item = FuncRef> + '_ {
        (0..self.nfunc).filter_map(move |i| {
            let entry = self.functab_pc(i)?;
            let end = self.functab_pc(i + 1)?;
            let funcoff = usize::try_from(self.functab_field(2 * i + 1)?).ok()?;
            (end > entry).then_some(FuncRef {
                entry,
                end,
                funcoff,
            })
        })
    }

    /// The runs of `PCDATA_InlTreeIndex` over `f`: `(start, end, index)`, index -1 where the
    /// code is the function's own. Empty without inline trees.
    pub fn inline_index_runs(&self, f: &FuncRef) -> Vec<(u64, u64, i32)> {
        let mut runs = Vec::new();
        if self.gofunc.is_none() {
            return runs;
        }
        let Some(npcdata) = self.func_field(f, 7) else {
            return runs;
        };
        if PCDATA_INL_TREE_INDEX >= npcdata {
            return runs;
        }
        let Some(at) = f
            .funcoff
            .checked_add(self.func_header_size())
            .and_then(|a| a.checked_add(PCDATA_INL_TREE_INDEX as usize * 4))
        else {
            return runs;
        };
        let Some(off) = self.u32_at(self.funcdata, at).filter(|&o| o != 0) else {
            return runs;
        };
        let Some(mut p) = usize::try_from(off).ok().and_then(|o| self.pctab.get(o..)) else {
            return runs;
        };
        let (mut val, mut pc, mut first) = (-1i32, f.entry, true);
        for _ in 0..=p.len() / 2 + 1 {
            let Some((uvdelta, used)) = uvarint32(p) else {
                break;
            };
            p = &p[used..];
            if uvdelta == 0 && !first {
                break;
            }
            first = false;
            let vdelta = if uvdelta & 1 != 0 {
                !(uvdelta >> 1) as i32
            } else {
                (uvdelta >> 1) as i32
            };
            let Some((pcdelta, used)) = uvarint32(p) else {
                break;
            };
            p = &p[used..];
            let Some(next) = pc.checked_add(u64::from(pcdelta) * u64::from(self.quantum)) else {
                break;
            };
            val = val.wrapping_add(vdelta);
            let end = next.min(f.end);
            if end > pc {
                runs.push((pc, end, val));
            }
            pc = next;
            if pc >= f.end {
                break;
            }
        }
        runs
    }

    /// Inline tree entry `index` of `f`: the inlined function's name and the offset from the
    /// function's entry of the call it stands for (`parentPc`).
    pub fn inline_node(&self, f: &FuncRef, index: i32) -> Option<(&'a [u8], u64)> {
        self.inlined_call(f, index)
    }

    /// Whether any function name in the table (inlined-only ones included: inline trees name
    /// their functions through the same name table) satisfies `pred`. A cheap test before
    /// walking every function's inline tree.
    pub fn any_name(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.funcnametab
            .split(|&b| b == 0)
            .any(|name| std::str::from_utf8(name).is_ok_and(|n| !n.is_empty() && pred(n)))
    }

    /// The inline tree index at `pc` (-1: the function's own code).
    pub fn inline_index_at(&self, f: &FuncRef, pc: u64) -> Option<i32> {
        self.pcdata_value(f, PCDATA_INL_TREE_INDEX, pc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarints() {
        assert_eq!(uvarint32(&[0]), Some((0, 1)));
        assert_eq!(uvarint32(&[0x7f]), Some((127, 1)));
        assert_eq!(uvarint32(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(
            uvarint32(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((u32::MAX, 5))
        );
        assert_eq!(uvarint32(&[0x80]), None);
        assert_eq!(uvarint32(&[]), None);
        assert_eq!(uvarint32(&[0x80; 6]), None);
    }
}

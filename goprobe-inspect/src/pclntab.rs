//! Reader for Go's `pclntab` (the runtime's PC → function table), which survives stripping.
//!
//! Layouts follow Go's own reader, `src/debug/gosym/pclntab.go`, and the writer,
//! `src/cmd/link/internal/ld/pcln.go`. Only what goprobe needs is read: function names and
//! entry/end addresses. Line tables, file tables and inline trees are left alone here.
//!
//! The input is untrusted: every offset and count from the header is checked against the table's
//! length before use, arithmetic is checked, and nothing is allocated from a header count that
//! the table could not actually hold.

use std::fmt;

/// Which pclntab layout a table uses, by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum PclnVersion {
    /// 0xfffffffb: Go 1.2–1.15. Absolute pointer-sized entry PCs; names relative to the table.
    Go12,
    /// 0xfffffffa: Go 1.16–1.17. Sub-tables located by header offsets; still absolute entry PCs.
    Go116,
    /// 0xfffffff0: Go 1.18–1.19. Entry PCs become 32-bit offsets from `runtime.text`.
    Go118,
    /// 0xfffffff1: Go 1.20+. Same function layout as 1.18 for what we read.
    Go120,
}

impl PclnVersion {
    pub const GO12_MAGIC: u32 = 0xffff_fffb;
    pub const GO116_MAGIC: u32 = 0xffff_fffa;
    pub const GO118_MAGIC: u32 = 0xffff_fff0;
    pub const GO120_MAGIC: u32 = 0xffff_fff1;

    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            Self::GO12_MAGIC => Some(Self::Go12),
            Self::GO116_MAGIC => Some(Self::Go116),
            Self::GO118_MAGIC => Some(Self::Go118),
            Self::GO120_MAGIC => Some(Self::Go120),
            _ => None,
        }
    }

    /// Whether function entries are offsets from `runtime.text` (1.18+) rather than absolute.
    pub fn entries_relative_to_text(self) -> bool {
        self >= Self::Go118
    }
}

impl fmt::Display for PclnVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Go12 => "go1.2-1.15",
            Self::Go116 => "go1.16-1.17",
            Self::Go118 => "go1.18-1.19",
            Self::Go120 => "go1.20+",
        })
    }
}

/// Why a table was rejected. The text is short and names the field, so that a user reading
/// "malformed .gopclntab: ..." can tell a truncated file from an unknown format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PclnError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, PclnError> {
    Err(PclnError(what.into()))
}

/// Quick check of the fixed header bytes (magic, padding, quantum, pointer size), used both by
/// [`Pclntab::parse`] and by callers scanning memory for a table whose section was stripped.
pub fn looks_like_header(data: &[u8]) -> bool {
    header_fields(data).is_ok()
}

fn header_fields(data: &[u8]) -> Result<(PclnVersion, bool, u8, u8), PclnError> {
    if data.len() < 16 {
        return err(format!("table too short ({} bytes)", data.len()));
    }
    let magic_bytes = [data[0], data[1], data[2], data[3]];
    let (version, big_endian) =
        if let Some(v) = PclnVersion::from_magic(u32::from_le_bytes(magic_bytes)) {
            (v, false)
        } else if let Some(v) = PclnVersion::from_magic(u32::from_be_bytes(magic_bytes)) {
            (v, true)
        } else {
            return err(format!(
                "unknown magic {:#010x}",
                u32::from_le_bytes(magic_bytes)
            ));
        };
    if data[4] != 0 || data[5] != 0 {
        return err("header padding is not zero");
    }
    let quantum = data[6];
    if !matches!(quantum, 1 | 2 | 4) {
        return err(format!("invalid PC quantum {quantum}"));
    }
    let ptr_size = data[7];
    if !matches!(ptr_size, 4 | 8) {
        return err(format!("invalid pointer size {ptr_size}"));
    }
    Ok((version, big_endian, quantum, ptr_size))
}

/// A parsed pclntab borrowing the table's bytes.
#[derive(Debug, Clone)]
pub struct Pclntab<'a> {
    version: PclnVersion,
    big_endian: bool,
    quantum: u8,
    ptr_size: u8,
    nfunc: usize,
    /// `2 * nfunc + 1` fields: (entry, funcoff) pairs, then the end PC of the last function.
    functab: &'a [u8],
    /// Base that `funcoff` values are relative to.
    funcdata: &'a [u8],
    /// Base that `_func.nameOff` values are relative to.
    funcnametab: &'a [u8],
    header_text_start: u64,
    funcname_offset: u64,
    pcln_offset: u64,
}

/// One function from the table. `name` borrows the table; callers allocate only if they keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PclnFunc<'a> {
    pub name: &'a [u8],
    pub entry: u64,
    /// The next function's entry (or the table's end PC for the last one), as in `debug/gosym`.
    /// This includes the int3 padding the linker puts between functions.
    pub end: u64,
}

impl<'a> PclnFunc<'a> {
    /// The name as text. Go names are UTF-8; anything else is shown lossily rather than refused.
    pub fn name_str(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.name)
    }
}

impl<'a> Pclntab<'a> {
    /// Parse the header and locate the sub-tables. `data` starts at the header and may extend
    /// past the table's end (e.g. when found by scanning a segment); only header-named ranges are
    /// read.
    pub fn parse(data: &'a [u8]) -> Result<Self, PclnError> {
        let (version, big_endian, quantum, ptr_size) = header_fields(data)?;
        let word = |i: usize| -> Result<u64, PclnError> {
            let at = 8 + i * usize::from(ptr_size);
            read_uint(data, at, usize::from(ptr_size), big_endian)
                .ok_or_else(|| PclnError(format!("header truncated at word {i}")))
        };
        let sub = |name: &str, off: u64| -> Result<&'a [u8], PclnError> {
            usize::try_from(off)
                .ok()
                .and_then(|o| data.get(o..))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    PclnError(format!(
                        "{name} offset {off:#x} is outside the table ({:#x} bytes)",
                        data.len()
                    ))
                })
        };
        let field_size = if version >= PclnVersion::Go118 {
            4
        } else {
            usize::from(ptr_size)
        };

        let (
            nfunc,
            functab_start,
            funcdata,
            funcnametab,
            header_text_start,
            funcname_offset,
            pcln_offset,
        ) = match version {
            PclnVersion::Go116 | PclnVersion::Go118 | PclnVersion::Go120 => {
                // Go 1.18 added textStart as header word 2, moving the offsets after it by one.
                let added = usize::from(version >= PclnVersion::Go118);
                let text_start = if added == 1 { word(2)? } else { 0 };
                let funcname_offset = word(2 + added)?;
                let pcln_offset = word(6 + added)?;
                let funcnametab = sub("funcnametab", funcname_offset)?;
                let pcln = sub("pclntable", pcln_offset)?;
                (
                    word(0)?,
                    pcln,
                    pcln,
                    funcnametab,
                    text_start,
                    funcname_offset,
                    pcln_offset,
                )
            }
            PclnVersion::Go12 => {
                // The 1.2 layout has no sub-table offsets: the functab follows the count, and
                // both func offsets and name offsets are relative to the table start.
                let nfunc = word(0)?;
                let functab = sub("functab", 8 + u64::from(ptr_size))?;
                (nfunc, functab, data, data, 0, 0, 8 + u64::from(ptr_size))
            }
        };

        // Bound nfunc by what the table can hold before allocating or iterating anything.
        let functab_len = usize::try_from(nfunc)
            .ok()
            .and_then(|n| n.checked_mul(2))
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(field_size))
            .filter(|&len| len <= functab_start.len())
            .ok_or_else(|| {
                PclnError(format!(
                    "function count {nfunc} does not fit in the table ({:#x} bytes after the functab start)",
                    functab_start.len()
                ))
            })?;
        let nfunc = nfunc as usize; // checked above: (2n+1)*size fits in a slice length

        Ok(Pclntab {
            version,
            big_endian,
            quantum,
            ptr_size,
            nfunc,
            functab: &functab_start[..functab_len],
            funcdata,
            funcnametab,
            header_text_start,
            funcname_offset,
            pcln_offset,
        })
    }

    pub fn version(&self) -> PclnVersion {
        self.version
    }
    pub fn big_endian(&self) -> bool {
        self.big_endian
    }
    /// Minimum instruction size (1 on x86, 4 on arm64).
    pub fn quantum(&self) -> u8 {
        self.quantum
    }
    pub fn ptr_size(&self) -> u8 {
        self.ptr_size
    }
    /// Number of functab entries (including any zero-size ones).
    pub fn len(&self) -> usize {
        self.nfunc
    }
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// The header's `textStart` (1.18+), if the linker stored one. Recent Go versions leave it 0
    /// (it needed a relocation; the runtime reads `moduledata.text` instead), and in PIE builds it
    /// may be unrelocated, so callers should prefer `runtime.text` from the symtab or moduledata.
    pub fn header_text_start(&self) -> Option<u64> {
        (self.version >= PclnVersion::Go118 && self.header_text_start != 0)
            .then_some(self.header_text_start)
    }

    /// Offset of funcnametab from the header (what `moduledata.funcnametab` points at, minus the
    /// header address). Used to recognise `runtime.firstmoduledata` when scanning data.
    pub fn funcname_offset(&self) -> u64 {
        self.funcname_offset
    }

    /// Offset of the functab/pclntable from the header (`moduledata.ftab` minus the header).
    pub fn pcln_offset(&self) -> u64 {
        self.pcln_offset
    }

    fn field(&self, i: usize) -> Result<u64, PclnError> {
        let size = if self.version >= PclnVersion::Go118 {
            4
        } else {
            usize::from(self.ptr_size)
        };
        i.checked_mul(size)
            .and_then(|at| read_uint(self.functab, at, size, self.big_endian))
            .ok_or_else(|| PclnError(format!("functab field {i} out of range")))
    }

    fn pc(&self, i: usize, text_start: u64) -> Result<u64, PclnError> {
        let raw = self.field(2 * i)?;
        if self.version.entries_relative_to_text() {
            text_start.checked_add(raw).ok_or_else(|| {
                PclnError(format!(
                    "entry offset {raw:#x} overflows past text start {text_start:#x}"
                ))
            })
        } else {
            Ok(raw)
        }
    }

    /// The i-th function. `text_start` is `runtime.text` (ignored before 1.18, where entries are
    /// absolute).
    pub fn func(&self, i: usize, text_start: u64) -> Result<PclnFunc<'a>, PclnError> {
        if i >= self.nfunc {
            return err(format!("function index {i} out of range"));
        }
        let entry = self.pc(i, text_start)?;
        let end = self.pc(i + 1, text_start)?;
        if end < entry {
            return err(format!(
                "functab is not sorted (entry {i} at {entry:#x} ends at {end:#x})"
            ));
        }
        let funcoff = self.field(2 * i + 1)?;
        // `_func` begins with the entry (u32 offset from 1.18, uintptr before), then nameOff (i32).
        let name_field = if self.version >= PclnVersion::Go118 {
            4
        } else {
            usize::from(self.ptr_size)
        };
        let name_off = usize::try_from(funcoff)
            .ok()
            .and_then(|o| o.checked_add(name_field))
            .and_then(|at| read_uint(self.funcdata, at, 4, self.big_endian))
            .ok_or_else(|| {
                PclnError(format!(
                    "_func record of function {i} at {funcoff:#x} is outside the table"
                ))
            })?;
        // nameOff is an int32; a negative value is invalid. read_uint gives u32 semantics.
        if name_off > i32::MAX as u64 {
            return err(format!("negative name offset in function {i}"));
        }
        let name = self
            .funcnametab
            .get(name_off as usize..)
            .and_then(|rest| rest.iter().position(|&b| b == 0).map(|nul| &rest[..nul]))
            .ok_or_else(|| {
                PclnError(format!(
                    "name of function {i} at {name_off:#x} is outside funcnametab or unterminated"
                ))
            })?;
        Ok(PclnFunc { name, entry, end })
    }

    /// All functions in table order (sorted by entry), in one allocation bounded by the table size.
    pub fn functions(&self, text_start: u64) -> Result<Vec<PclnFunc<'a>>, PclnError> {
        let mut out = Vec::with_capacity(self.nfunc);
        for i in 0..self.nfunc {
            out.push(self.func(i, text_start)?);
        }
        Ok(out)
    }

    /// The end PC recorded after the last function (`runtime.etext` relative to text for 1.18+).
    pub fn end_pc(&self, text_start: u64) -> Result<u64, PclnError> {
        self.pc(self.nfunc, text_start)
    }

    /// The first function's entry offset as stored (relative to text for 1.18+), used to check
    /// a candidate `runtime.text` against `moduledata.minpc`.
    pub fn first_entry_raw(&self) -> Option<u64> {
        if self.nfunc == 0 {
            None
        } else {
            self.field(0).ok()
        }
    }
}

/// Read an unsigned integer of `size` (1, 2, 4 or 8) bytes at `at`, or None if out of range.
pub(crate) fn read_uint(data: &[u8], at: usize, size: usize, big_endian: bool) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(size)?)?;
    let mut v: u64 = 0;
    if big_endian {
        for &b in bytes {
            v = (v << 8) | u64::from(b);
        }
    } else {
        for &b in bytes.iter().rev() {
            v = (v << 8) | u64::from(b);
        }
    }
    Some(v)
}

/// Builders of synthetic tables in every supported layout, shared by the unit tests, the
/// synthetic-ELF tests and the robustness test.
/// Synthetic pclntabs, for `testelf` (tests and fuzz seeds).
pub mod synth {
    use super::PclnVersion;

    /// A function for a synthetic table: name, entry offset from the text start, size.
    pub struct SynthFunc<'n> {
        pub name: &'n str,
        pub off: u64,
        pub size: u64,
    }

    /// Build a little-endian, 8-byte-pointer pclntab of `version` whose functions start at
    /// `text + off`. For 1.18+ the header's textStart is written as `header_text` (0 mimics
    /// Go 1.26+, which no longer stores it).
    pub fn build(
        version: PclnVersion,
        text: u64,
        header_text: u64,
        funcs: &[SynthFunc<'_>],
    ) -> Vec<u8> {
        let ptr = 8usize;
        let magic = match version {
            PclnVersion::Go12 => PclnVersion::GO12_MAGIC,
            PclnVersion::Go116 => PclnVersion::GO116_MAGIC,
            PclnVersion::Go118 => PclnVersion::GO118_MAGIC,
            PclnVersion::Go120 => PclnVersion::GO120_MAGIC,
        };
        let mut out = Vec::new();
        out.extend_from_slice(&magic.to_le_bytes());
        out.extend_from_slice(&[0, 0, 1, ptr as u8]);
        let n = funcs.len() as u64;
        let end = funcs.last().map_or(0, |f| f.off + f.size);
        let put =
            |v: &mut Vec<u8>, x: u64, size: usize| v.extend_from_slice(&x.to_le_bytes()[..size]);
        match version {
            PclnVersion::Go12 => {
                // nfunc, then functab (ptr-sized pairs + end), then _func records with names
                // appended after them; every offset is relative to the table start.
                put(&mut out, n, ptr);
                let functab_at = out.len();
                let functab_len = (2 * funcs.len() + 1) * ptr;
                let funcs_at = functab_at + functab_len + 4; // + filetab offset (u32), unused
                let func_rec = ptr + 4 + 4; // entry, nameoff, padding
                let names_at = funcs_at + funcs.len() * func_rec;
                let mut names = Vec::new();
                let mut recs = Vec::new();
                for f in funcs {
                    let rec_off = funcs_at + recs.len();
                    put(&mut out, text + f.off, ptr);
                    put(&mut out, rec_off as u64, ptr);
                    put(&mut recs, text + f.off, ptr);
                    put(&mut recs, (names_at + names.len()) as u64, 4);
                    put(&mut recs, 0, 4);
                    names.extend_from_slice(f.name.as_bytes());
                    names.push(0);
                }
                put(&mut out, text + end, ptr);
                put(&mut out, 0, 4);
                out.extend_from_slice(&recs);
                out.extend_from_slice(&names);
            }
            PclnVersion::Go116 | PclnVersion::Go118 | PclnVersion::Go120 => {
                let words = if version == PclnVersion::Go116 { 7 } else { 8 };
                let header_len = 8 + words * ptr;
                let mut names = Vec::new();
                let mut name_offs = Vec::new();
                for f in funcs {
                    name_offs.push(names.len() as u64);
                    names.extend_from_slice(f.name.as_bytes());
                    names.push(0);
                }
                let funcname_offset = header_len as u64;
                let pcln_offset = funcname_offset + names.len() as u64;
                let rel = version != PclnVersion::Go116;
                let field = if rel { 4 } else { ptr };
                let functab_len = (2 * funcs.len() + 1) * field;
                let func_rec = if rel { 4 + 4 } else { ptr + 8 };
                let mut pcln = Vec::new();
                for (i, f) in funcs.iter().enumerate() {
                    let entry = if rel { f.off } else { text + f.off };
                    put(&mut pcln, entry, field);
                    put(&mut pcln, (functab_len + i * func_rec) as u64, field);
                }
                put(&mut pcln, if rel { end } else { text + end }, field);
                for (i, f) in funcs.iter().enumerate() {
                    if rel {
                        put(&mut pcln, f.off, 4);
                    } else {
                        put(&mut pcln, text + f.off, ptr);
                    }
                    put(&mut pcln, name_offs[i], 4);
                    if !rel {
                        put(&mut pcln, 0, 4);
                    }
                }
                let mut hdr = vec![n, 0];
                if rel {
                    hdr.push(header_text);
                }
                hdr.extend_from_slice(&[funcname_offset, 0, 0, 0, pcln_offset]);
                for w in hdr {
                    put(&mut out, w, ptr);
                }
                assert_eq!(out.len(), header_len);
                out.extend_from_slice(&names);
                out.extend_from_slice(&pcln);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::synth::{SynthFunc, build};
    use super::*;

    fn sample() -> Vec<SynthFunc<'static>> {
        vec![
            SynthFunc {
                name: "runtime.text",
                off: 0x20,
                size: 0,
            },
            SynthFunc {
                name: "main.foo",
                off: 0x20,
                size: 0x40,
            },
            SynthFunc {
                name: "main.(*T).M",
                off: 0x60,
                size: 0x20,
            },
        ]
    }

    #[test]
    fn parses_every_layout() {
        for version in [
            PclnVersion::Go12,
            PclnVersion::Go116,
            PclnVersion::Go118,
            PclnVersion::Go120,
        ] {
            let data = build(version, 0x401000, 0, &sample());
            let t = Pclntab::parse(&data).unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!(t.version(), version);
            assert_eq!(t.len(), 3);
            let fs = t.functions(0x401000).unwrap();
            assert_eq!(fs[1].name, b"main.foo");
            assert_eq!(fs[1].entry, 0x401020);
            assert_eq!(fs[1].end, 0x401060);
            assert_eq!(fs[2].name_str(), "main.(*T).M");
            assert_eq!(fs[2].end, 0x401080);
            assert_eq!(
                fs[0].entry, fs[0].end,
                "zero-size entries are reported, callers skip them"
            );
        }
    }

    #[test]
    fn header_text_start_only_when_stored() {
        let data = build(PclnVersion::Go118, 0x401000, 0x401000, &sample());
        assert_eq!(
            Pclntab::parse(&data).unwrap().header_text_start(),
            Some(0x401000)
        );
        let data = build(PclnVersion::Go120, 0x401000, 0, &sample());
        assert_eq!(Pclntab::parse(&data).unwrap().header_text_start(), None);
    }

    #[test]
    fn rejects_malformed_headers() {
        let good = build(PclnVersion::Go120, 0x401000, 0, &sample());
        let expect_err = |data: &[u8], needle: &str| {
            let e = Pclntab::parse(data)
                .and_then(|t| t.functions(0x401000))
                .unwrap_err();
            assert!(
                e.0.contains(needle),
                "{:?} does not mention {needle:?}",
                e.0
            );
        };
        expect_err(&[], "too short");
        expect_err(&good[..15], "too short");
        expect_err(&good[..20], "header truncated");
        let mut bad = good.clone();
        bad[0] = 0x12;
        expect_err(&bad, "unknown magic");
        let mut bad = good.clone();
        bad[4] = 1;
        expect_err(&bad, "padding");
        let mut bad = good.clone();
        bad[6] = 3;
        expect_err(&bad, "quantum");
        let mut bad = good.clone();
        bad[7] = 2;
        expect_err(&bad, "pointer size");
        // A huge function count must be refused before anything is allocated from it.
        let mut bad = good.clone();
        bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        expect_err(&bad, "does not fit");
        let mut bad = good.clone();
        bad[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        expect_err(&bad, "does not fit");
        // funcnametab / pclntable offsets beyond the end.
        let mut bad = good.clone();
        bad[32..40].copy_from_slice(&0xffff_ffffu64.to_le_bytes());
        expect_err(&bad, "funcnametab offset");
        let mut bad = good.clone();
        bad[64..72].copy_from_slice(&(good.len() as u64).to_le_bytes());
        expect_err(&bad, "pclntable offset");
        // Truncating the table cuts into the functab / _func records / names.
        for cut in [good.len() - 1, good.len() - 9, 100, 80] {
            assert!(
                Pclntab::parse(&good[..cut])
                    .and_then(|t| t.functions(0x401000))
                    .is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn rejects_unsorted_and_bad_names() {
        let good = build(PclnVersion::Go120, 0x401000, 0, &sample());
        let t = Pclntab::parse(&good).unwrap();
        let pcln_off = t.pcln_offset() as usize;
        // Entry of function 2 below function 1's: not sorted.
        let mut bad = good.clone();
        bad[pcln_off + 16..pcln_off + 20].copy_from_slice(&0x10u32.to_le_bytes());
        let e = Pclntab::parse(&bad)
            .unwrap()
            .functions(0x401000)
            .unwrap_err();
        assert!(e.0.contains("not sorted"), "{e}");
        // A name offset pointing outside funcnametab.
        let func_recs = pcln_off + 7 * 4;
        let mut bad = good.clone();
        bad[func_recs + 4..func_recs + 8].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        let e = Pclntab::parse(&bad)
            .unwrap()
            .functions(0x401000)
            .unwrap_err();
        assert!(e.0.contains("outside funcnametab"), "{e}");
        // Negative name offset.
        bad[func_recs + 4..func_recs + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(Pclntab::parse(&bad).unwrap().functions(0x401000).is_err());
        // A funcoff pointing outside the table.
        let mut bad = good.clone();
        bad[pcln_off + 4..pcln_off + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let e = Pclntab::parse(&bad)
            .unwrap()
            .functions(0x401000)
            .unwrap_err();
        assert!(e.0.contains("_func record"), "{e}");
        // Entry offsets that overflow when added to the text start.
        assert!(
            Pclntab::parse(&good)
                .unwrap()
                .functions(u64::MAX - 4)
                .is_err()
        );
    }

    #[test]
    fn big_endian_magic_is_recognised() {
        let mut data = build(PclnVersion::Go120, 0, 0, &[]);
        data[..4].copy_from_slice(&PclnVersion::GO120_MAGIC.to_be_bytes());
        assert!(looks_like_header(&data));
        assert_eq!(header_fields(&data), Ok((PclnVersion::Go120, true, 1, 8)));
    }
}

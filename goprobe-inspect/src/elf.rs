//! ELF-level reading for Go binaries: segments, sections, symbols, notes, and locating the Go
//! structures (pclntab, `runtime.text`, build info) even when sections or symbols are stripped.
//!
//! Built on `object`'s low-level ELF API, which bounds-checks every header-derived range; our
//! own reads go through [`Elf::read_vaddr`] / [`read_uint`], which return `None` rather than
//! index out of range.

use object::{
    Endianness, elf,
    read::elf::{
        FileHeader, ProgramHeader, Rela as _, SectionHeader, SectionTable, Sym as _, SymbolTable,
    },
};

use super::pclntab::{self, Pclntab, read_uint};

type Header = elf::FileHeader64<Endianness>;

// e_ident indices (object exposes the header as a struct, not these offsets).
pub(crate) const EI_CLASS: usize = 4;
pub(crate) const EI_DATA: usize = 5;
pub(crate) const EI_VERSION: usize = 6;

/// A `PT_LOAD` program header: the only thing that decides where code is in the file, and what
/// aya's file-offset based attach needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

impl LoadSegment {
    pub fn executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
    /// File offset of `vaddr` if it lies in the file-backed part of this segment.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        let rel = vaddr.checked_sub(self.vaddr)?;
        if rel < self.filesz {
            self.offset.checked_add(rel)
        } else {
            None
        }
    }
}

/// Why a file could not be read as an ELF we handle; mapped to `InspectError` by the caller.
#[derive(Debug)]
pub enum ElfError {
    NotElf,
    /// An ELF class or machine goprobe does not handle (text for the user, e.g. "32-bit i386").
    Unsupported(String),
    Malformed(String),
}

/// Where a pclntab was found; shown in reports because the fallbacks are less certain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PclntabSource {
    Section(&'static str),
    Symbol,
    Scan,
}

/// Where the `runtime.text` address used for 1.18+ entry offsets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextStartSource {
    /// The `runtime.text` symbol.
    Symtab,
    /// `runtime.firstmoduledata.text`, the value the Go runtime itself uses.
    Moduledata,
    /// The pclntab header's textStart field (Go 1.18 until Go stopped storing it).
    PclntabHeader,
    /// The `.text` section address: wrong for cgo/externally linked binaries, a last resort.
    TextSection,
    /// Pre-1.18 tables hold absolute addresses.
    NotNeeded,
}

pub struct Elf<'a> {
    pub data: &'a [u8],
    endian: Endianness,
    pub e_type: u16,
    pub machine: u16,
    pub segments: Vec<LoadSegment>,
    notes: Vec<(u64, u64, u64)>, // PT_NOTE (offset, filesz, align)
    sections: SectionTable<'a, Header, &'a [u8]>,
    symbols: SymbolTable<'a, Header, &'a [u8]>,
}

/// Human name of an ELF machine, for "unsupported architecture" messages.
pub fn machine_name(machine: u16) -> String {
    match machine {
        elf::EM_386 => "i386".into(),
        elf::EM_ARM => "arm".into(),
        elf::EM_X86_64 => "x86-64".into(),
        elf::EM_AARCH64 => "arm64".into(),
        elf::EM_PPC64 => "ppc64".into(),
        elf::EM_S390 => "s390x".into(),
        elf::EM_MIPS => "mips".into(),
        elf::EM_RISCV => "riscv64".into(),
        elf::EM_LOONGARCH => "loong64".into(),
        other => format!("ELF machine {other}"),
    }
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 16 || data[..4] != elf::ELFMAG {
            return Err(ElfError::NotElf);
        }
        if data[EI_CLASS] != elf::ELFCLASS64 {
            // Read e_machine from the 32-bit header by hand for a useful message.
            let be = data[EI_DATA] == elf::ELFDATA2MSB;
            let machine = read_uint(data, 18, 2, be).map_or(0, |m| m as u16);
            return Err(ElfError::Unsupported(format!(
                "32-bit {}",
                machine_name(machine)
            )));
        }
        let header =
            Header::parse(data).map_err(|e| ElfError::Malformed(format!("ELF header: {e}")))?;
        let endian = header
            .endian()
            .map_err(|e| ElfError::Malformed(format!("ELF header: {e}")))?;
        let e_type = header.e_type(endian);
        if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
            // Relocatable objects and core dumps have no executable layout to probe.
            return Err(ElfError::NotElf);
        }
        let machine = header.e_machine(endian);
        let phdrs = header
            .program_headers(endian, data)
            .map_err(|e| ElfError::Malformed(format!("ELF program headers: {e}")))?;
        let mut segments = Vec::new();
        let mut notes = Vec::new();
        for ph in phdrs {
            let (offset, filesz) = (ph.p_offset(endian), ph.p_filesz(endian));
            // Keep only the file-backed bytes that really exist, so later reads stay in bounds.
            let in_file = offset <= data.len() as u64 && filesz <= data.len() as u64 - offset;
            match ph.p_type(endian) {
                elf::PT_LOAD if in_file => segments.push(LoadSegment {
                    vaddr: ph.p_vaddr(endian),
                    memsz: ph.p_memsz(endian),
                    offset,
                    filesz,
                    flags: ph.p_flags(endian),
                }),
                elf::PT_LOAD => {
                    return Err(ElfError::Malformed(
                        "ELF program headers: PT_LOAD beyond end of file".into(),
                    ));
                }
                elf::PT_NOTE if in_file => notes.push((offset, filesz, ph.p_align(endian))),
                _ => {}
            }
        }
        // Section headers are optional (sstrip removes them); a broken table is treated as absent
        // because everything we need can be recovered from segments.
        let sections = header.sections(endian, data).unwrap_or_default();
        let symbols = sections
            .symbols(endian, data, elf::SHT_SYMTAB)
            .unwrap_or_default();
        Ok(Elf {
            data,
            endian,
            e_type,
            machine,
            segments,
            notes,
            sections,
            symbols,
        })
    }

    pub fn big_endian(&self) -> bool {
        self.endian == Endianness::Big
    }

    /// Address and bytes of a section with file contents.
    pub fn section(&self, name: &str) -> Option<(u64, &'a [u8])> {
        let (_, sh) = self
            .sections
            .section_by_name(self.endian, name.as_bytes())?;
        if sh.sh_type(self.endian) == elf::SHT_NOBITS {
            return None;
        }
        let bytes = sh.data(self.endian, self.data).ok()?;
        Some((sh.sh_addr(self.endian), bytes))
    }

    pub fn section_addr(&self, name: &str) -> Option<u64> {
        self.sections
            .section_by_name(self.endian, name.as_bytes())
            .map(|(_, sh)| sh.sh_addr(self.endian))
    }

    pub fn has_symtab(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// Look several symbols up in one pass over `.symtab`: (value, size) of the first match each.
    pub fn lookup_symbols<const N: usize>(&self, names: [&str; N]) -> [Option<(u64, u64)>; N] {
        let mut out = [None; N];
        let strings = self.symbols.strings();
        for sym in self.symbols.iter() {
            let Ok(name) = sym.name(self.endian, strings) else {
                continue;
            };
            for (i, want) in names.iter().enumerate() {
                if out[i].is_none() && name == want.as_bytes() {
                    out[i] = Some((sym.st_value(self.endian), sym.st_size(self.endian)));
                }
            }
        }
        out
    }

    /// `STT_FUNC` symbols with a size, whose start lies in an executable segment.
    pub fn function_symbols(&self) -> Vec<(&'a [u8], u64, u64)> {
        let strings = self.symbols.strings();
        let mut out = Vec::new();
        for sym in self.symbols.iter() {
            if sym.st_type() != elf::STT_FUNC || sym.st_size(self.endian) == 0 {
                continue;
            }
            let addr = sym.st_value(self.endian);
            if !self.in_executable(addr) {
                continue;
            }
            if let Ok(name) = sym.name(self.endian, strings)
                && !name.is_empty()
            {
                out.push((name, addr, sym.st_size(self.endian)));
            }
        }
        out
    }

    pub fn in_executable(&self, vaddr: u64) -> bool {
        self.segments
            .iter()
            .any(|s| s.executable() && s.file_offset(vaddr).is_some())
    }

    /// File bytes backing `[vaddr, vaddr+len)`, if one `PT_LOAD` segment holds them all.
    pub fn read_vaddr(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        self.segments.iter().find_map(|s| {
            let start = s.file_offset(vaddr)?;
            let rel_end = (vaddr - s.vaddr).checked_add(len)?;
            if rel_end > s.filesz {
                return None;
            }
            let start = usize::try_from(start).ok()?;
            self.data
                .get(start..start.checked_add(usize::try_from(len).ok()?)?)
        })
    }

    /// The file bytes of a segment from `vaddr` to the end of the segment's file-backed part.
    pub fn rest_of_segment(&self, vaddr: u64) -> Option<&'a [u8]> {
        self.segments.iter().find_map(|s| {
            let start = usize::try_from(s.file_offset(vaddr)?).ok()?;
            let end = usize::try_from(s.offset + s.filesz).ok()?;
            self.data.get(start..end)
        })
    }

    pub fn read_word(&self, vaddr: u64, size: u8) -> Option<u64> {
        let bytes = self.read_vaddr(vaddr, u64::from(size))?;
        read_uint(bytes, 0, usize::from(size), self.big_endian())
    }

    fn segment_bytes(&self, s: &LoadSegment) -> &'a [u8] {
        let (Ok(start), Ok(len)) = (usize::try_from(s.offset), usize::try_from(s.filesz)) else {
            return &[];
        };
        self.data
            .get(start..start.saturating_add(len))
            .unwrap_or(&[])
    }

    /// Find the pclntab: by section name, then by symbol, then by scanning read-only data for a
    /// header that parses and whose function table reads cleanly.
    pub fn find_pclntab(&self) -> Option<(u64, &'a [u8], PclntabSource)> {
        for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
            if let Some((addr, bytes)) = self.section(name) {
                return Some((addr, bytes, PclntabSource::Section(name)));
            }
        }
        let [start, end, pcheader] =
            self.lookup_symbols(["runtime.pclntab", "runtime.epclntab", "runtime.pcheader"]);
        if let Some((addr, _)) = start.or(pcheader) {
            let bytes = match end {
                Some((end, _)) if end > addr => self.read_vaddr(addr, end - addr),
                _ => self.rest_of_segment(addr),
            };
            if let Some(bytes) = bytes {
                return Some((addr, bytes, PclntabSource::Symbol));
            }
        }
        // Sections gone (sstrip, or a cgo PIE whose pclntab sits inside .data.rel.ro without a
        // section of its own): scan non-executable segments. The header is pointer-aligned.
        for seg in self.segments.iter().filter(|s| !s.executable()) {
            let bytes = self.segment_bytes(seg);
            let mut at = (seg.vaddr.wrapping_neg() % 4) as usize;
            while at + 16 <= bytes.len() {
                let cand = &bytes[at..];
                if pclntab::looks_like_header(cand)
                    && let Ok(t) = Pclntab::parse(cand)
                    && !t.is_empty()
                    && t.functions(0).is_ok()
                {
                    // p_vaddr is untrusted: wrap rather than overflow; a bogus address only fails later.
                    return Some((seg.vaddr.wrapping_add(at as u64), cand, PclntabSource::Scan));
                }
                at += 4;
            }
        }
        None
    }

    /// `runtime.text` for a 1.18+ table at `pcln_vaddr`, with where it came from.
    pub fn text_start(&self, tab: &Pclntab<'_>, pcln_vaddr: u64) -> Option<(u64, TextStartSource)> {
        if !tab.version().entries_relative_to_text() {
            return Some((0, TextStartSource::NotNeeded));
        }
        if let [Some((text, _))] = self.lookup_symbols(["runtime.text"]) {
            return Some((text, TextStartSource::Symtab));
        }
        if let Some(text) = self.moduledata_text(tab, pcln_vaddr) {
            return Some((text, TextStartSource::Moduledata));
        }
        if let Some(text) = tab.header_text_start() {
            return Some((text, TextStartSource::PclntabHeader));
        }
        self.section_addr(".text")
            .map(|t| (t, TextStartSource::TextSection))
    }

    /// Find `runtime.firstmoduledata` (it starts with a pointer to the pclntab header) and read
    /// its `text` field. Layout, stable from Go 1.16 through at least 1.27 (runtime/symtab.go):
    /// word 0 pcHeader, 1–3 funcnametab, 4–6 cutab, 7–9 filetab, 10–12 pctab, 13–15 pclntable,
    /// 16–18 ftab, 19 findfunctab, 20 minpc, 21 maxpc, 22 text, 23 etext.
    fn moduledata_text(&self, tab: &Pclntab<'_>, pcln_vaddr: u64) -> Option<u64> {
        let ptr = tab.ptr_size();
        let step = u64::from(ptr);
        let check = |word: &dyn Fn(u64) -> Option<u64>| -> Option<u64> {
            let funcnametab = pcln_vaddr.checked_add(tab.funcname_offset())?;
            let ftab = pcln_vaddr.checked_add(tab.pcln_offset())?;
            if word(1)? != funcnametab || word(16)? != ftab || word(17)? != tab.len() as u64 + 1 {
                return None;
            }
            let text = word(22)?;
            // minpc is the first function's entry: text + its offset.
            let minpc_ok = tab
                .first_entry_raw()
                .is_none_or(|off| text.checked_add(off) == word(20));
            minpc_ok.then_some(text)
        };
        // moduledata is written data (.noptrdata / .go.module), so only writable segments are
        // scanned; the linker stores the pointer values in the file, even for PIE.
        for seg in self
            .segments
            .iter()
            .filter(|s| s.writable() && !s.executable())
        {
            let bytes = self.segment_bytes(seg);
            let mut at = (seg.vaddr.wrapping_neg() % step) as usize;
            while at + usize::from(ptr) <= bytes.len() {
                if read_uint(bytes, at, usize::from(ptr), self.big_endian()) == Some(pcln_vaddr) {
                    let md = seg.vaddr.wrapping_add(at as u64);
                    if let Some(text) = check(&|i| self.read_word(md.checked_add(i * step)?, ptr)) {
                        return Some(text);
                    }
                }
                at += usize::from(ptr);
            }
        }
        // Linkers that leave RELATIVE-relocated words zero in the file (lld without
        // --apply-dynamic-relocs): find moduledata through its relocation, read words via addends.
        let relocs = self.relative_relocations();
        let word_at = |addr: u64| -> Option<u64> {
            match relocs.binary_search_by_key(&addr, |r| r.0) {
                Ok(i) => Some(relocs[i].1),
                Err(_) => self.read_word(addr, ptr),
            }
        };
        for &(md, addend) in &relocs {
            if addend == pcln_vaddr
                && let Some(text) = check(&|i| word_at(md.checked_add(i * step)?))
            {
                return Some(text);
            }
        }
        None
    }

    /// (r_offset, addend) of every RELATIVE relocation in SHT_RELA sections, sorted.
    fn relative_relocations(&self) -> Vec<(u64, u64)> {
        let relative = match self.machine {
            elf::EM_X86_64 => elf::R_X86_64_RELATIVE,
            elf::EM_AARCH64 => elf::R_AARCH64_RELATIVE,
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        for sh in self.sections.iter() {
            if let Ok(Some((relas, _))) = sh.rela(self.endian, self.data) {
                for r in relas {
                    if r.r_type(self.endian, false) == relative {
                        out.push((r.r_offset(self.endian), r.r_addend(self.endian) as u64));
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// The Go version from the build info blob (`.go.buildinfo`, or found by its magic in
    /// writable data), else from `runtime.buildVersion`.
    pub fn go_version(&self) -> Option<String> {
        const MAGIC: &[u8] = b"\xff Go buildinf:";
        let blob = self
            .section(".go.buildinfo")
            .map(|(_, b)| b)
            .filter(|b| b.starts_with(MAGIC))
            .or_else(|| {
                // The blob is 16-byte aligned in writable data.
                self.segments
                    .iter()
                    .filter(|s| s.writable())
                    .find_map(|seg| {
                        let bytes = self.segment_bytes(seg);
                        let mut at = (seg.vaddr.wrapping_neg() % 16) as usize;
                        while at + 32 <= bytes.len() {
                            if bytes[at..].starts_with(MAGIC) {
                                return Some(&bytes[at..]);
                            }
                            at += 16;
                        }
                        None
                    })
            });
        if let Some(v) = blob.and_then(|b| self.parse_buildinfo(b)) {
            return Some(v);
        }
        let [bv] = self.lookup_symbols(["runtime.buildVersion"]);
        let (addr, _) = bv?;
        self.read_go_string(addr, 8, self.big_endian())
    }

    fn parse_buildinfo(&self, blob: &[u8]) -> Option<String> {
        let ptr = *blob.get(14)?;
        let flags = *blob.get(15)?;
        if flags & 2 != 0 {
            // Go 1.18+: the version follows the 32-byte header as a uvarint-length string.
            let (len, used) = uvarint(blob.get(32..)?)?;
            let start = 32 + used;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            return valid_version(blob.get(start..end)?);
        }
        // Before 1.18: two pointers to Go string headers (version, module info).
        if !matches!(ptr, 4 | 8) {
            return None;
        }
        let big = flags & 1 != 0;
        let str_hdr = read_uint(blob, 16, usize::from(ptr), big)?;
        self.read_go_string(str_hdr, ptr, big)
    }

    /// Read a Go `string` header (data pointer, length) at `vaddr` and the bytes it names.
    fn read_go_string(&self, vaddr: u64, ptr: u8, big: bool) -> Option<String> {
        let hdr = self.read_vaddr(vaddr, 2 * u64::from(ptr))?;
        let data = read_uint(hdr, 0, usize::from(ptr), big)?;
        let len = read_uint(hdr, usize::from(ptr), usize::from(ptr), big)?;
        if len == 0 || len > 256 {
            return None;
        }
        valid_version(self.read_vaddr(data, len)?)
    }

    /// The build ID: GNU build-id (hex) when the linker wrote one, else Go's own build ID note.
    pub fn build_id(&self) -> Option<String> {
        let mut go_id = None;
        let mut visit = |bytes: &[u8], align: u64| -> Option<String> {
            for (name, ntype, desc) in Notes::new(bytes, align, self.big_endian()) {
                if name == b"GNU" && ntype == elf::NT_GNU_BUILD_ID && !desc.is_empty() {
                    return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
                }
                if name == b"Go" && ntype == 4 && go_id.is_none() {
                    go_id = std::str::from_utf8(desc)
                        .ok()
                        .map(|s| s.trim_end_matches('\0').to_string());
                }
            }
            None
        };
        for name in [".note.gnu.build-id", ".note.go.buildid"] {
            if let Some((_, bytes)) = self.section(name) {
                let align = self
                    .sections
                    .section_by_name(self.endian, name.as_bytes())
                    .map_or(4, |(_, sh)| sh.sh_addralign(self.endian));
                if let Some(id) = visit(bytes, align) {
                    return Some(id);
                }
            }
        }
        for &(offset, filesz, align) in &self.notes {
            let bytes = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(filesz).ok())
                .and_then(|(o, l)| self.data.get(o..o.checked_add(l)?))
                .unwrap_or(&[]);
            if let Some(id) = visit(bytes, align) {
                return Some(id);
            }
        }
        go_id.filter(|s| !s.is_empty())
    }
}

fn valid_version(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    (!s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .then(|| s.to_string())
}

/// Go's `binary.Uvarint`: value and bytes used, None if truncated or longer than 10 bytes.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Iterator over ELF notes in a buffer: (name without NULs, type, desc). Stops at the first
/// malformed entry instead of failing, since notes only feed optional fields.
struct Notes<'a> {
    rest: &'a [u8],
    align: usize,
    big: bool,
}

impl<'a> Notes<'a> {
    fn new(bytes: &'a [u8], align: u64, big: bool) -> Self {
        Notes {
            rest: bytes,
            align: if align == 8 { 8 } else { 4 },
            big,
        }
    }
}

impl<'a> Iterator for Notes<'a> {
    type Item = (&'a [u8], u32, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let namesz = usize::try_from(read_uint(self.rest, 0, 4, self.big)?).ok()?;
        let descsz = usize::try_from(read_uint(self.rest, 4, 4, self.big)?).ok()?;
        let ntype = read_uint(self.rest, 8, 4, self.big)? as u32;
        let pad = |n: usize| n.checked_add(self.align - 1).map(|v| v & !(self.align - 1));
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = 12usize.checked_add(pad(namesz)?)?;
        let desc_end = desc_start.checked_add(descsz)?;
        let name = self.rest.get(12..name_end)?;
        let desc = self.rest.get(desc_start..desc_end)?;
        let next = desc_start.checked_add(pad(descsz)?)?;
        self.rest = self.rest.get(next..).unwrap_or(&[]);
        let name = match name.iter().position(|&b| b == 0) {
            Some(nul) => &name[..nul],
            None => name,
        };
        Some((name, ntype, desc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_decodes_and_bounds() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[0xff; 11]), None);
    }

    #[test]
    fn notes_parse_and_stop_on_garbage() {
        let mut b = Vec::new();
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(b"GNU\0");
        b.extend_from_slice(&[0xab, 0xcd, 0xef, 0]);
        b.extend_from_slice(&[0xff; 7]); // a truncated second note
        let notes: Vec<_> = Notes::new(&b, 4, false).collect();
        assert_eq!(notes, vec![(&b"GNU"[..], 3, &[0xab, 0xcd, 0xef][..])]);
        assert_eq!(Notes::new(&[0xff; 40], 4, false).count(), 0);
    }

    #[test]
    fn non_elf_and_32_bit_are_told_apart() {
        assert!(matches!(
            Elf::parse(b"hello world, not an ELF"),
            Err(ElfError::NotElf)
        ));
        assert!(matches!(Elf::parse(b"\x7fELF"), Err(ElfError::NotElf)));
        let mut h = vec![0u8; 52];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = elf::ELFCLASS32;
        h[5] = elf::ELFDATA2LSB;
        h[18] = 3; // EM_386
        match Elf::parse(&h) {
            Err(ElfError::Unsupported(m)) => assert_eq!(m, "32-bit i386"),
            other => panic!("{:?}", other.err()),
        }
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = elf::ELFCLASS64;
        h[5] = elf::ELFDATA2LSB;
        assert!(matches!(Elf::parse(&h), Err(ElfError::Malformed(_))));
    }
}

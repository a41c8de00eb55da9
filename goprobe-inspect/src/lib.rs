//! What goprobe knows about a Go binary before touching any process: function names and
//! ranges (from `.symtab`, or from `.gopclntab` when stripped), the Go version and build ID, and
//! for each function the probe sites (entry after the stack check, every RET).
//!
//! Everything here reads untrusted files: errors are values, never panics, and no allocation is
//! sized by a header field that the file could not back.

//!
//! A library of its own (goprobe-inspect), so that the goprobe binary, the tests and the fuzz
//! targets share one reader: `elf` (sections, segments, build ID, Go build info), `pclntab` and
//! `pcvalue` (function table and PC-value tables), `gofunc` (`go:func.*`), `disasm` (probe sites
//! from machine code, x86-64 and arm64), `inline` (inlined copies, from the pclntab's inline
//! trees or DWARF), `goabi` (where arguments are at a function's entry, their types from DWARF or declared), `symbolize` (PCs to Go frames), `file` (opening only regular files, so a
//! FIFO or a device named as a binary or config cannot hang or exhaust goprobe), and `testelf` (small synthetic ELF images for
//! tests and fuzz seeds).

pub mod disasm;
pub mod elf;
pub mod file;
pub mod goabi;
pub mod gofunc;
pub mod inline;
pub mod pclntab;
pub mod pcvalue;
pub mod symbolize;
pub mod testelf;

use std::{
    fmt,
    path::{Path, PathBuf},
};

pub use disasm::DisasmError;
pub use elf::{LoadSegment, PclntabSource, TextStartSource};
pub use pclntab::PclnVersion;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    #[error("cannot read {}: {}", .path.display(), io_message(.source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an ELF executable", .path.display())]
    NotElf { path: PathBuf },
    #[error("{} is not a Go binary (no .gopclntab / Go build info)", .path.display())]
    NotGo { path: PathBuf },
    #[error("{}: unsupported architecture {machine} (goprobe handles x86-64 and arm64)", .path.display())]
    UnsupportedArch { path: PathBuf, machine: String },
    #[error("{}: malformed {what}", .path.display())]
    Malformed { path: PathBuf, what: String },
}

/// `Permission denied` rather than `Permission denied (os error 13)`: the errno adds nothing
/// for the user and the message must stay one plain line.
pub fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86-64",
            Arch::Aarch64 => "arm64",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    Symtab,
    Pclntab,
}

impl NameSource {
    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::Symtab => "symtab",
            NameSource::Pclntab => "pclntab",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub source: NameSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The `jbe`/`jls` of the prologue's stack check: the kernel emulates it (cheap), and its
    /// flags tell a real call (CF=0, ZF=0) from one about to re-enter via morestack.
    StackCheckBranch,
    /// No stack check found (frameless or NOSPLIT): the function's first instruction.
    FunctionStart,
    /// No stack check, and the first instruction is one the kernel would single-step: the first
    /// instruction it emulates instead (a branch, call, NOP or push) on the straight-line start
    /// of the function, which every call passes exactly once with the stack pointer unchanged.
    EmulatedPrefix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSites {
    /// Virtual address of the entry probe.
    pub entry: u64,
    pub entry_kind: EntryKind,
    /// Virtual address of every RET.
    pub returns: Vec<u64>,
    /// Where each RET (same order) is probed: the RET itself, or the NOP right before it when
    /// nothing can jump to the RET (the kernel emulates a NOP; it single-steps a RET).
    pub return_sites: Vec<u64>,
    /// Direct `jmp`s whose target is outside the function (tail calls): returns through them are
    /// not seen by RET probes.
    pub tail_jumps: usize,
    /// `jmp reg`/`jmp [mem]`: jump tables or tail calls; cannot be told apart statically.
    pub indirect_jumps: usize,
}

pub struct BinaryIndex {
    pub path: PathBuf,
    pub arch: Arch,
    pub go_version: Option<String>,
    pub build_id: Option<String>,
    pub pie: bool,
    /// Sorted by address; one function per address.
    pub functions: Vec<Function>,
    data: Box<dyn AsRef<[u8]> + Send + Sync>,
    segments: Vec<LoadSegment>,
    /// Indices into `functions`, sorted by name, for `find`.
    by_name: Vec<u32>,
    pclntab: Option<PclntabInfo>,
}

/// How the pclntab was found and read, for reports and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PclntabInfo {
    pub vaddr: u64,
    pub version: PclnVersion,
    pub source: PclntabSource,
    pub text_start: u64,
    pub text_start_source: TextStartSource,
    /// Functions in the table (before dropping zero-size entries).
    pub entries: usize,
}

impl fmt::Debug for BinaryIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryIndex")
            .field("path", &self.path)
            .field("arch", &self.arch)
            .field("go_version", &self.go_version)
            .field("build_id", &self.build_id)
            .field("pie", &self.pie)
            .field("functions", &self.functions.len())
            .field("pclntab", &self.pclntab)
            .finish_non_exhaustive()
    }
}

/// The build ID of an ELF file, read from its notes without indexing it (cheap: only the
/// headers are parsed). None for unreadable files, non-ELF files and builds without one.
pub fn read_build_id(path: &Path) -> Option<String> {
    let file = file::open_regular(path).ok()?;
    if file.metadata().ok()?.len() < 64 {
        return None;
    }
    // SAFETY: read-only private mapping of an executable, as in `BinaryIndex::open`.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    elf::Elf::parse(&map).ok()?.build_id()
}

impl BinaryIndex {
    /// Map the file and index it.
    pub fn open(path: &Path) -> Result<BinaryIndex, InspectError> {
        let io = |source| InspectError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Regular files only: a FIFO would block the open, a device (`/dev/zero`) be read
        // without end.
        let file = file::open_regular(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.len() < 64 {
            // Too small for an ELF header; mmap of an empty file would fail with a confusing
            // error, so read it and let `parse` say "not an ELF executable".
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(&file, 64), &mut bytes)
                .map_err(io)?;
            return Self::parse(path.to_path_buf(), bytes);
        }
        // SAFETY: the mapping is read-only and private to us. The Go binaries we index are
        // executables: while one runs, Linux refuses writes to its file (ETXTBSY), and package
        // managers replace binaries by rename, which leaves this mapping intact. Only a writer
        // truncating the file in place could invalidate it (SIGBUS), the accepted risk of every
        // mmap-based ELF reader (perf, gdb), traded for indexing 40 MB binaries without copying.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), map)
    }

    /// Index an ELF image held in memory (a `Vec<u8>`, an `Mmap`, ...).
    pub fn parse(
        path: PathBuf,
        data: impl AsRef<[u8]> + Send + Sync + 'static,
    ) -> Result<BinaryIndex, InspectError> {
        let data: Box<dyn AsRef<[u8]> + Send + Sync> = Box::new(data);
        let parsed = parse_image(&path, (*data).as_ref())?;
        let mut by_name: Vec<u32> = (0..parsed.functions.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| {
            parsed.functions[a as usize]
                .name
                .cmp(&parsed.functions[b as usize].name)
                .then(a.cmp(&b))
        });
        Ok(BinaryIndex {
            path,
            arch: parsed.arch,
            go_version: parsed.go_version,
            build_id: parsed.build_id,
            pie: parsed.pie,
            functions: parsed.functions,
            data,
            segments: parsed.segments,
            by_name,
            pclntab: parsed.pclntab,
        })
    }

    fn bytes(&self) -> &[u8] {
        (*self.data).as_ref()
    }

    /// File offset of `vaddr` through the executable `PT_LOAD` segments
    /// (`vaddr - p_vaddr + p_offset`): what aya's uprobe attach takes.
    pub fn vaddr_to_file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.executable())
            .find_map(|s| s.file_offset(vaddr))
    }

    /// The address of the static itab that makes a `*concrete` (`net/http.response`) an
    /// interface with `methods` (sorted by name, as Go sorts an interface's methods), for
    /// `--by` paths that assert an interface's dynamic type. An itab's method table, at word 3,
    /// lists the concrete methods' addresses in that order: the one place in the data segments
    /// that holds that sequence is the itab, stripped binaries included (they keep the method
    /// names in the pclntab). Position-independent binaries hold those words as relocations,
    /// not values: refused.
    pub fn static_itab(&self, concrete: &str, methods: &[&str]) -> Result<u64, String> {
        if self.pie {
            return Err("it is position-independent (its itabs are relocated at load)".into());
        }
        if methods.is_empty() {
            return Err("its interface has no methods".into());
        }
        let (package, name) = concrete
            .rsplit_once('.')
            .ok_or_else(|| format!("{concrete:?} is not a qualified type name"))?;
        let mut wanted = Vec::with_capacity(methods.len());
        for method in methods {
            let function = format!("{package}.(*{name}).{method}");
            let f = self.find(&function).ok_or_else(|| {
                format!("it has no {function} (*{concrete} may not implement it here)")
            })?;
            wanted.push(f.addr);
        }
        let data = self.bytes();
        let mut found = Vec::new();
        for seg in self.segments.iter().filter(|s| !s.executable()) {
            let (Ok(start), Ok(len)) = (usize::try_from(seg.offset), usize::try_from(seg.filesz))
            else {
                continue;
            };
            let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
                continue;
            };
            let word = |at: usize| -> Option<u64> {
                let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
                // Both architectures goprobe reads are little-endian.
                Some(u64::from_le_bytes(b))
            };
            let mut at = (seg.vaddr.wrapping_neg() % 8) as usize;
            while at + 8 * wanted.len() <= bytes.len() {
                if word(at) == Some(wanted[0])
                    && at >= 24
                    && wanted
                        .iter()
                        .enumerate()
                        .all(|(i, &w)| word(at + 8 * i) == Some(w))
                    // The itab's interface word points into the binary, and its hash is its
                    // type's (an itab keeps a copy of `_type.hash`, at 16 in both).
                    && word(at - 24).is_some_and(|p| self.segments.iter().any(|s| s.file_offset(p).is_some()))
                    && word(at - 16)
                        .and_then(|ty| self.read_u32(ty + 16))
                        .zip(word(at - 8))
                        .is_some_and(|(hash, itab_hash)| u64::from(hash) == itab_hash & 0xffff_ffff)
                {
                    found.push(seg.vaddr + (at - 24) as u64);
                }
                at += 8;
            }
        }
        match found.as_slice() {
            [itab] => Ok(*itab),
            [] => Err(format!(
                "it has no static itab for *{concrete} (no conversion of one to the interface was compiled in)"
            )),
            _ => Err(format!(
                "it has {} candidate itabs for *{concrete}",
                found.len()
            )),
        }
    }

    /// The little-endian u32 at `vaddr`, if a segment has it in the file.
    fn read_u32(&self, vaddr: u64) -> Option<u32> {
        let offset = self.segments.iter().find_map(|s| s.file_offset(vaddr))?;
        let at = usize::try_from(offset).ok()?;
        let b: [u8; 4] = self.bytes().get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    }

    /// The bytes of `[f.addr, f.addr + f.size)`, if all of them are in one executable segment.
    pub fn function_code(&self, f: &Function) -> Option<&[u8]> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.executable() && s.file_offset(f.addr).is_some())?;
        let start = seg.file_offset(f.addr)?;
        let end = start.checked_add(f.size)?;
        if end > seg.offset + seg.filesz {
            return None;
        }
        self.bytes()
            .get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    /// The whole file, as indexed.
    pub fn data(&self) -> &[u8] {
        (*self.data).as_ref()
    }

    pub fn probe_sites(&self, f: &Function) -> Result<ProbeSites, DisasmError> {
        let code = self
            .function_code(f)
            .ok_or(DisasmError::NoCode { addr: f.addr })?;
        disasm::sites(self.arch, code, f.addr)
    }

    /// The function with exactly this name (the first by address if a name repeats, as C
    /// static functions in cgo binaries can).
    pub fn find(&self, name: &str) -> Option<&Function> {
        let i = self
            .by_name
            .partition_point(|&i| self.functions[i as usize].name.as_str() < name);
        let &idx = self.by_name.get(i)?;
        let f = &self.functions[idx as usize];
        (f.name == name).then_some(f)
    }

    /// The function whose range contains `addr`.
    pub fn function_at(&self, addr: u64) -> Option<&Function> {
        let i = self.functions.partition_point(|f| f.addr <= addr);
        let f = self.functions.get(i.checked_sub(1)?)?;
        (addr - f.addr < f.size).then_some(f)
    }

    /// The `PT_LOAD` segments, for callers that map addresses themselves.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    pub fn pclntab_info(&self) -> Option<&PclntabInfo> {
        self.pclntab.as_ref()
    }

    /// Number of functions named from each source: (symtab, pclntab).
    pub fn name_counts(&self) -> (usize, usize) {
        let symtab = self
            .functions
            .iter()
            .filter(|f| f.source == NameSource::Symtab)
            .count();
        (symtab, self.functions.len() - symtab)
    }
}

struct Parsed {
    arch: Arch,
    go_version: Option<String>,
    build_id: Option<String>,
    pie: bool,
    functions: Vec<Function>,
    segments: Vec<LoadSegment>,
    pclntab: Option<PclntabInfo>,
}

fn parse_image(path: &Path, data: &[u8]) -> Result<Parsed, InspectError> {
    let malformed = |what: String| InspectError::Malformed {
        path: path.to_path_buf(),
        what,
    };
    let elf = match elf::Elf::parse(data) {
        Ok(e) => e,
        Err(elf::ElfError::NotElf) => {
            return Err(InspectError::NotElf {
                path: path.to_path_buf(),
            });
        }
        Err(elf::ElfError::Unsupported(machine)) => {
            return Err(InspectError::UnsupportedArch {
                path: path.to_path_buf(),
                machine,
            });
        }
        Err(elf::ElfError::Malformed(what)) => return Err(malformed(what)),
    };
    let arch = match elf.machine {
        object::elf::EM_X86_64 => Arch::X86_64,
        object::elf::EM_AARCH64 => Arch::Aarch64,
        m => {
            return Err(InspectError::UnsupportedArch {
                path: path.to_path_buf(),
                machine: elf::machine_name(m),
            });
        }
    };

    let go_version = elf.go_version();
    let Some((pcln_vaddr, pcln_bytes, pcln_source)) = elf.find_pclntab() else {
        return Err(if go_version.is_some() {
            malformed("Go binary: it has Go build info but no .gopclntab function table".into())
        } else {
            InspectError::NotGo {
                path: path.to_path_buf(),
            }
        });
    };
    let tab =
        pclntab::Pclntab::parse(pcln_bytes).map_err(|e| malformed(format!(".gopclntab: {e}")))?;
    let (text_start, text_start_source) = elf.text_start(&tab, pcln_vaddr).ok_or_else(|| {
        malformed(
            ".gopclntab: cannot find runtime.text (no symbol, module data or .text section)".into(),
        )
    })?;
    let pcln_funcs = tab
        .functions(text_start)
        .map_err(|e| malformed(format!(".gopclntab: {e}")))?;
    // A wrong text start shifts every function out of the code; catch it here rather than
    // probing garbage later.
    for f in [
        pcln_funcs.iter().find(|f| f.end > f.entry),
        pcln_funcs.iter().rev().find(|f| f.end > f.entry),
    ]
    .into_iter()
    .flatten()
    {
        if !elf.in_executable(f.entry) {
            return Err(malformed(format!(
                ".gopclntab: function {} at {:#x} is outside the executable segments (runtime.text {text_start:#x} from {text_start_source:?})",
                f.name_str(),
                f.entry
            )));
        }
    }

    let functions = merge_functions(&elf.function_symbols(), &pcln_funcs);
    Ok(Parsed {
        arch,
        go_version,
        build_id: elf.build_id(),
        pie: elf.e_type == object::elf::ET_DYN,
        functions,
        pclntab: Some(PclntabInfo {
            vaddr: pcln_vaddr,
            version: tab.version(),
            source: pcln_source,
            text_start,
            text_start_source,
            entries: tab.len(),
        }),
        segments: elf.segments,
    })
}

/// One function per address, sorted. Symtab entries (exact sizes, and C functions in cgo builds)
/// win; pclntab fills in any function the symtab lacks, and breaks ties between symtab aliases.
/// Work on borrowed names and allocate a `String` only for the functions kept.
///
/// Where both tables know an address, the name is the pclntab's: that is how the Go runtime,
/// stack traces and pprof spell it, and it keeps names identical whether or not the binary was
/// stripped. The symtab differs in linker details: `runtime.asmcgocall.abi0` for assembly
/// functions, `type..eq.[2]runtime.Frame` for `type..eq.[...]runtime.Frame`, `.` for `·`.
fn merge_functions<'a>(
    syms: &[(&'a [u8], u64, u64)],
    pcln: &[pclntab::PclnFunc<'a>],
) -> Vec<Function> {
    let pcln_name_at = |addr: u64| -> Option<&'a [u8]> {
        let i = pcln.partition_point(|f| f.entry < addr);
        pcln[i..]
            .iter()
            .take_while(|f| f.entry == addr)
            .find(|f| f.end > f.entry)
            .map(|f| f.name)
    };
    let mut chosen: Vec<(&[u8], u64, u64, NameSource)> =
        Vec::with_capacity(syms.len().max(pcln.len()));
    let mut syms: Vec<&(&[u8], u64, u64)> = syms.iter().collect();
    syms.sort_unstable_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
    let mut i = 0;
    while i < syms.len() {
        let addr = syms[i].1;
        let group_end = i + syms[i..].iter().take_while(|s| s.1 == addr).count();
        let group = &syms[i..group_end];
        let go_name = pcln_name_at(addr);
        // Among aliases, the symbol the pclntab agrees with, else the largest (then first by name).
        let pick = go_name
            .and_then(|name| {
                group
                    .iter()
                    .find(|s| s.0 == name || s.0.strip_suffix(b".abi0") == Some(name))
            })
            .or_else(|| group.iter().max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(a.0))));
        if let Some(&&(sym_name, _, size)) = pick {
            chosen.push((go_name.unwrap_or(sym_name), addr, size, NameSource::Symtab));
        }
        i = group_end;
    }
    let sym_count = chosen.len();
    for f in pcln {
        if f.end <= f.entry {
            continue; // zero-size entries are markers (e.g. runtime.text), nothing to probe
        }
        let covered = chosen[..sym_count]
            .binary_search_by_key(&f.entry, |c| c.1)
            .is_ok();
        let duplicate = chosen[sym_count..].last().is_some_and(|c| c.1 == f.entry);
        if !covered && !duplicate {
            chosen.push((f.name, f.entry, f.end - f.entry, NameSource::Pclntab));
        }
    }
    if sym_count > 0 && chosen.len() > sym_count {
        chosen.sort_by_key(|c| c.1);
    }
    chosen
        .into_iter()
        .map(|(name, addr, size, source)| Function {
            name: String::from_utf8_lossy(name).into_owned(),
            addr,
            size,
            source,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::testelf::{ElfSpec, FUNCS, TEXT};
    use super::*;

    fn parse(spec: &ElfSpec) -> Result<BinaryIndex, InspectError> {
        BinaryIndex::parse(PathBuf::from("/x"), spec.build())
    }

    #[test]
    fn error_messages_are_one_actionable_line() {
        let e = BinaryIndex::open(Path::new("/nonexistent/goprobe-test")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read /nonexistent/goprobe-test: No such file or directory"
        );
        let e = BinaryIndex::open(Path::new("/")).unwrap_err();
        assert!(matches!(e, InspectError::Io { .. }), "{e}");
        let e =
            BinaryIndex::parse(PathBuf::from("/x"), b"#!/bin/sh\necho hi\n".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "/x is not an ELF executable");
        let e = parse(&ElfSpec {
            go: false,
            ..ElfSpec::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x is not a Go binary (no .gopclntab / Go build info)"
        );
        let e = parse(&ElfSpec {
            machine: object::elf::EM_RISCV,
            ..ElfSpec::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x: unsupported architecture riscv64 (goprobe handles x86-64 and arm64)"
        );
        let e = parse(&ElfSpec {
            corrupt_pclntab: true,
            ..ElfSpec::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("/x: malformed .gopclntab: "),
            "{e}"
        );
        for e in [
            InspectError::Io {
                path: "/x".into(),
                source: std::io::Error::from_raw_os_error(13),
            },
            InspectError::Malformed {
                path: "/x".into(),
                what: ".gopclntab: bad".into(),
            },
        ] {
            assert!(!e.to_string().contains('\n'));
        }
        assert_eq!(
            InspectError::Io {
                path: "/x".into(),
                source: std::io::Error::from_raw_os_error(13)
            }
            .to_string(),
            "cannot read /x: Permission denied"
        );
    }

    #[test]
    fn indexes_synthetic_go_binaries_every_way() {
        let variants = [
            (
                "symtab",
                ElfSpec::default(),
                NameSource::Symtab,
                TextStartSource::Symtab,
            ),
            (
                "stripped",
                ElfSpec {
                    symtab: false,
                    ..ElfSpec::default()
                },
                NameSource::Pclntab,
                TextStartSource::Moduledata,
            ),
            (
                "stripped, no moduledata, header text",
                ElfSpec {
                    symtab: false,
                    moduledata: false,
                    header_text: true,
                    ..ElfSpec::default()
                },
                NameSource::Pclntab,
                TextStartSource::PclntabHeader,
            ),
            (
                "no section headers at all",
                ElfSpec {
                    symtab: false,
                    section_headers: false,
                    ..ElfSpec::default()
                },
                NameSource::Pclntab,
                TextStartSource::Moduledata,
            ),
            (
                "pie",
                ElfSpec {
                    pie: true,
                    symtab: false,
                    ..ElfSpec::default()
                },
                NameSource::Pclntab,
                TextStartSource::Moduledata,
            ),
        ];
        for (what, spec, source, text_src) in variants {
            let idx = parse(&spec).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(idx.arch, Arch::X86_64, "{what}");
            assert_eq!(idx.go_version.as_deref(), Some("go1.27.3"), "{what}");
            assert_eq!(
                idx.build_id.as_deref(),
                Some("synthetic-go-build-id"),
                "{what}"
            );
            assert_eq!(idx.pie, spec.pie, "{what}");
            let info = idx.pclntab_info().unwrap();
            assert_eq!(
                (info.text_start, info.text_start_source),
                (TEXT, text_src),
                "{what}"
            );
            let names: Vec<_> = idx.functions.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(
                names,
                FUNCS.iter().map(|f| f.0).collect::<Vec<_>>(),
                "{what}"
            );
            assert!(idx.functions.iter().all(|f| f.source == source), "{what}");
            let foo = idx.find("main.foo").unwrap();
            assert_eq!(foo.addr, TEXT + FUNCS[1].1);
            let sites = idx.probe_sites(foo).unwrap();
            assert_eq!(
                (sites.entry_kind, sites.entry),
                (EntryKind::StackCheckBranch, foo.addr + 4),
                "{what}"
            );
            assert_eq!(sites.returns.len(), 1);
            let off = idx.vaddr_to_file_offset(foo.addr).unwrap() as usize;
            assert_eq!(
                &idx.bytes()[off..off + foo.size as usize],
                idx.function_code(foo).unwrap()
            );
            assert_eq!(
                idx.function_at(foo.addr + 3).map(|f| f.name.as_str()),
                Some("main.foo")
            );
            assert!(idx.find("main.nope").is_none());
        }
    }

    #[test]
    fn older_pclntab_layouts_and_build_info() {
        for version in [PclnVersion::Go12, PclnVersion::Go116, PclnVersion::Go118] {
            for symtab in [true, false] {
                let spec = ElfSpec {
                    pcln_version: version,
                    old_buildinfo: true,
                    symtab,
                    ..ElfSpec::default()
                };
                let idx = parse(&spec).unwrap_or_else(|e| panic!("{version}: {e}"));
                let info = idx.pclntab_info().unwrap();
                assert_eq!(info.version, version);
                let want = match (version.entries_relative_to_text(), symtab) {
                    (false, _) => TextStartSource::NotNeeded,
                    (true, true) => TextStartSource::Symtab,
                    (true, false) => TextStartSource::Moduledata,
                };
                assert_eq!(info.text_start_source, want, "{version}");
                assert_eq!(idx.go_version.as_deref(), Some("go1.15.1"), "{version}");
                let names: Vec<_> = idx
                    .functions
                    .iter()
                    .map(|f| (f.name.as_str(), f.addr))
                    .collect();
                let want: Vec<_> = FUNCS.iter().map(|f| (f.0, TEXT + f.1)).collect();
                assert_eq!(names, want, "{version}");
            }
        }
    }

    #[test]
    fn wrong_text_start_is_malformed_not_garbage() {
        let spec = ElfSpec {
            symtab: false,
            moduledata: false,
            header_text: false,
            text_section_addr: Some(0x10),
            ..ElfSpec::default()
        };
        let e = parse(&spec).unwrap_err();
        assert!(
            e.to_string().contains("outside the executable segments"),
            "{e}"
        );
    }

    #[test]
    fn merge_prefers_symtab_and_pclntab_names_for_aliases() {
        let pcln = [
            pclntab::PclnFunc {
                name: b"runtime.text",
                entry: 0x1000,
                end: 0x1000,
            },
            pclntab::PclnFunc {
                name: b"a.f",
                entry: 0x1000,
                end: 0x1020,
            },
            pclntab::PclnFunc {
                name: b"a.g",
                entry: 0x1020,
                end: 0x1040,
            },
            pclntab::PclnFunc {
                name: b"a.h",
                entry: 0x1040,
                end: 0x1060,
            },
            pclntab::PclnFunc {
                name: b"a.[...]i",
                entry: 0x1060,
                end: 0x1080,
            },
        ];
        let syms: [(&[u8], u64, u64); 5] = [
            (b"a.h.abi0", 0x1040, 0x18),
            (b"alias", 0x1000, 0x20),
            (b"a.f", 0x1000, 0x1c),
            (b"cfunc", 0x900, 0x10),
            (b"a.[2]i", 0x1060, 0x10),
        ];
        let fs = merge_functions(&syms, &pcln);
        let got: Vec<_> = fs
            .iter()
            .map(|f| (f.name.as_str(), f.addr, f.size, f.source))
            .collect();
        assert_eq!(
            got,
            vec![
                ("cfunc", 0x900, 0x10, NameSource::Symtab),
                ("a.f", 0x1000, 0x1c, NameSource::Symtab),
                ("a.g", 0x1020, 0x20, NameSource::Pclntab),
                ("a.h", 0x1040, 0x18, NameSource::Symtab),
                ("a.[...]i", 0x1060, 0x10, NameSource::Symtab),
            ]
        );
    }
}

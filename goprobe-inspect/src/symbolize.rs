//! Go stack symbolization from the binary alone: raw stacks from the kernel (a PC, the frame-
//! pointer chain, the word at `rsp`) become source frames — function, file:line, and the inlined
//! calls at each PC — read from `.gopclntab` with no DWARF, the way `go tool pprof` shows them.
//!
//! * Addresses are mapped through `/proc/PID/maps` (PIE and non-PIE alike) to the binary that
//!   holds them. Go code is symbolized from its pclntab; anything else (C code of a cgo binary,
//!   shared libraries, the vDSO) is named by its symbol or its file.
//! * The innermost frames are rebuilt with the function's SP table: while a function's frame is
//!   not set up (at its entry and RET probes, in frameless leaves) the caller's return address is
//!   the word at `rsp` and `rbp` still belongs to the caller.
//! * A stack is never invented: where the chain cannot be followed with certainty (a switch to
//!   the runtime's system stack, C code, a broken chain), the stack ends with a `[truncated: ...]`
//!   frame that says why.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use goprobe_common::{LeafContext, StackTrace, stack};

use crate::{LoadSegment, elf::Elf, pclntab::Pclntab, pcvalue::LineTable};

/// One source-level frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Line {
    pub function: String,
    pub file: String,
    pub line: u32,
}

/// What kind of code a location is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Go,
    /// C code of a cgo binary, a shared library, the vDSO.
    Native,
    Kernel,
    /// Not a frame: where and why the stack stops being followed.
    Truncated,
}

/// A mapped file, as pprof's `Mapping` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
    pub file: String,
    pub build_id: String,
}

/// One PC of a stack with every source frame at it, innermost (inlined) first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The runtime address looked up (for a return address, the call: one byte before it).
    pub address: u64,
    pub kind: Kind,
    pub mapping: Option<Arc<Mapping>>,
    pub lines: Vec<Line>,
}

impl Location {
    fn truncated(why: &str) -> Self {
        Self {
            address: 0,
            kind: Kind::Truncated,
            mapping: None,
            lines: vec![Line {
                function: format!("[truncated: {why}]"),
                file: String::new(),
                line: 0,
            }],
        }
    }

    /// Code outside Go's tables (C, the vDSO, anonymous memory), named by `name` only.
    fn native(address: u64, mapping: &Arc<Mapping>, name: String) -> Self {
        Self {
            address,
            kind: Kind::Native,
            mapping: Some(mapping.clone()),
            lines: vec![Line {
                function: name,
                file: String::new(),
                line: 0,
            }],
        }
    }

    /// The outermost function at this PC (the physical function, inlined frames aside).
    pub fn function(&self) -> &str {
        self.lines.last().map_or("?", |l| l.function.as_str())
    }
}

/// A symbolized stack, innermost location first.
pub type Stack = Vec<Location>;

/// Runtime functions that switch to another stack: past them, a frame-pointer chain does not lead
/// to the true caller (it skips it or continues on a stack the caller is not on).
const STACK_SWITCHES: &[&str] = &[
    "runtime.systemstack",
    "runtime.systemstack_switch",
    "runtime.mcall",
    "runtime.morestack",
    "runtime.morestack_noctxt",
    "runtime.asmcgocall",
    "runtime.asmcgocall_landingpad",
    "runtime.cgocallback",
    "runtime.sigtramp",
    "runtime.cgoSigtramp",
    "runtime.sigtrampgo",
];

/// Functions a stack ends with when it was followed to its start: every goroutine's, a Go
/// thread's system stack, the main thread's.
const ROOTS: &[&str] = &["runtime.goexit", "runtime.mstart", "runtime.rt0_go"];

/// A Go binary's symbol tables, mapped once.
pub struct GoBinary {
    pub path: PathBuf,
    data: memmap2::Mmap,
    pcln: (usize, usize),
    text_start: u64,
    gofunc: Option<(usize, usize)>,
    pub build_id: String,
    pub segments: Vec<LoadSegment>,
    /// Function symbols of `.symtab` (C code in cgo binaries), sorted, for what the pclntab lacks.
    native: Vec<(u64, u64, String)>,
}

impl std::fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoBinary")
            .field("path", &self.path)
            .field("inline_trees", &self.gofunc.is_some())
            .finish_non_exhaustive()
    }
}

fn range_of(data: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - data.as_ptr() as usize;
    (start, start + part.len())
}

/// Why a binary cannot be read for symbols.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolizeError {
    #[error("cannot read {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a readable ELF: {0}")]
    NotElf(String),
    #[error("no .gopclntab: not a Go binary")]
    NotGo,
    #[error(".gopclntab")]
    Pclntab(#[source] crate::pclntab::PclnError),
    #[error("cannot find runtime.text")]
    NoTextStart,
}

impl GoBinary {
    pub fn open(path: &Path) -> Result<Self, SymbolizeError> {
        let io = |source| SymbolizeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::file::open_regular(path).map_err(io)?;
        // SAFETY: read-only private mapping of an executable; see BinaryIndex::open.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let elf = Elf::parse(&data).map_err(|e| SymbolizeError::NotElf(format!("{e:?}")))?;
        let (pcln_vaddr, pcln, _) = elf.find_pclntab().ok_or(SymbolizeError::NotGo)?;
        let tab = Pclntab::parse(pcln).map_err(SymbolizeError::Pclntab)?;
        let (text_start, _) = elf
            .text_start(&tab, pcln_vaddr)
            .ok_or(SymbolizeError::NoTextStart)?;
        let go_version = elf.go_version();
        let gofunc = crate::gofunc::find(
            &elf,
            &tab,
            pcln,
            pcln_vaddr,
            text_start,
            go_version.as_deref(),
        )
        .map(|bytes| range_of(&data, bytes));
        let pcln = range_of(&data, pcln);
        let mut native: Vec<(u64, u64, String)> = elf
            .function_symbols()
            .into_iter()
            .map(|(name, addr, size)| (addr, size, String::from_utf8_lossy(name).into_owned()))
            .collect();
        native.sort_unstable();
        let build_id = elf.build_id().unwrap_or_default();
        let segments = elf.segments.clone();
        drop(elf);
        Ok(Self {
            path: path.to_path_buf(),
            data,
            pcln,
            text_start,
            gofunc,
            build_id,
            segments,
            native,
        })
    }

    pub fn has_inline_trees(&self) -> bool {
        self.gofunc.is_some()
    }

    pub fn table(&self) -> Option<LineTable<'_>> {
        let table = LineTable::parse(&self.data[self.pcln.0..self.pcln.1], self.text_start).ok()?;
        Some(match self.gofunc {
            Some((a, b)) => table.with_gofunc(&self.data[a..b]),
            None => table,
        })
    }

    /// The source frames at virtual address `pc` (innermost first); empty if no Go function
    /// holds it.
    pub fn go_lines(&self, table: &LineTable<'_>, pc: u64) -> Vec<Line> {
        table
            .frames(pc)
            .into_iter()
            .map(|f| Line {
                function: String::from_utf8_lossy(f.function).into_owned(),
                file: String::from_utf8_lossy(f.file).into_owned(),
                line: u32::try_from(f.line).unwrap_or(0),
            })
            .collect()
    }

    /// The `.symtab` function holding `pc`, if any.
    pub fn native_name(&self, pc: u64) -> Option<&str> {
        let i = self.native.partition_point(|s| s.0 <= pc);
        let (addr, size, name) = self.native.get(i.checked_sub(1)?)?;
        (pc - addr < *size).then_some(name.as_str())
    }

    /// Offset of `vaddr` in the file, through the executable segments.
    fn file_offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset < s.offset + s.filesz.max(1))
            .map(|s| s.vaddr + (offset - s.offset))
    }
}

/// One line of /proc/PID/maps with an executable mapping.
#[derive(Debug, Clone)]
struct MapEntry {
    start: u64,
    end: u64,
    offset: u64,
    inode: u64,
    path: String,
}

/// An executable mapping of a process: the map line, the Go binary in it with its load bias
/// (runtime address - link address), and the mapping as profiles describe it.
type MappedCode = (MapEntry, Option<(Arc<GoBinary>, u64)>, Arc<Mapping>);

/// How a process's addresses are symbolized.
#[derive(Debug, Clone)]
pub struct ProcessView {
    maps: Vec<MappedCode>,
}

impl ProcessView {
    fn find(&self, addr: u64) -> Option<&MappedCode> {
        self.maps
            .iter()
            .find(|(m, _, _)| addr >= m.start && addr < m.end)
    }
}

fn read_maps(pid: u32) -> Option<Vec<MapEntry>> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(inode)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        if !perms.contains('x') {
            continue;
        }
        let path = parts.collect::<Vec<_>>().join(" ");
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset), Ok(inode)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        out.push(MapEntry {
            start,
            end,
            offset,
            inode,
            path,
        });
    }
    Some(out)
}

/// Symbolizes raw stacks of many processes, caching binaries, process maps and PCs.
#[derive(Default)]
pub struct Symbolizer {
    binaries: HashMap<(u64, u64), Option<Arc<GoBinary>>>,
    processes: HashMap<u32, Option<Arc<ProcessView>>>,
    /// (binary, vaddr looked up) → source frames.
    lines: HashMap<(usize, u64), Arc<Vec<Line>>>,
    kernel: Option<KernelSymbols>,
}

impl Symbolizer {
    /// Read (once) how process `pid` maps its code. Call it while the process is alive: a process
    /// that exits before is symbolized only if its binary is not PIE (see [`Self::assume_binary`]).
    pub fn observe(&mut self, pid: u32) {
        if self.processes.contains_key(&pid) {
            return;
        }
        let view = self.read_process(pid);
        self.processes.insert(pid, view.map(Arc::new));
    }

    /// Processes whose memory maps are kept.
    pub fn processes(&self) -> usize {
        self.processes.len()
    }

    /// Drop what [`Self::observe`] read of `pid`, once its last stacks are symbolized: a
    /// long-running caller (the agent) would otherwise keep every process it ever saw.
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Open (once) the binary at `path` while it can still be opened (`/proc/PID/exe` of a live
    /// process), so that its processes can be symbolized after they are gone. Returns its key.
    pub fn preload(&mut self, path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = fs::metadata(path).ok()?;
        self.binary(path).map(|_| (meta.dev(), meta.ino()))
    }

    /// For a process whose maps could not be read: place the preloaded binary `key` where a probe
    /// site at `file_offset` of it was hit at runtime address `pc` (PIE or not, Go maps its whole
    /// binary with one bias).
    pub fn assume_site(&mut self, pid: u32, key: (u64, u64), file_offset: u64, pc: u64) {
        if matches!(self.processes.get(&pid), Some(Some(_))) {
            return;
        }
        let Some(Some(binary)) = self.binaries.get(&key).cloned() else {
            return;
        };
        if let Some(vaddr) = binary.file_offset_to_vaddr(file_offset) {
            self.assume_view(pid, binary, pc.wrapping_sub(vaddr));
        }
    }

    /// Like [`Self::assume_site`] when the site hit is one of `file_offsets` (the RETs of a
    /// function): the one that puts the binary at a page-aligned bias, as loaders do.
    pub fn assume_one_of(&mut self, pid: u32, key: (u64, u64), file_offsets: &[u64], pc: u64) {
        if matches!(self.processes.get(&pid), Some(Some(_))) {
            return;
        }
        let Some(Some(binary)) = self.binaries.get(&key).cloned() else {
            return;
        };
        let found = file_offsets.iter().find_map(|&offset| {
            let bias = pc.wrapping_sub(binary.file_offset_to_vaddr(offset)?);
            (bias % 4096 == 0).then_some(bias)
        });
        if let Some(bias) = found {
            self.assume_view(pid, binary, bias);
        }
    }

    fn assume_view(&mut self, pid: u32, binary: Arc<GoBinary>, bias: u64) {
        let path = binary.path.display().to_string();
        let maps = binary
            .segments
            .iter()
            .filter(|s| s.executable())
            .map(|s| {
                let entry = MapEntry {
                    start: s.vaddr.wrapping_add(bias),
                    end: (s.vaddr + s.memsz).wrapping_add(bias),
                    offset: s.offset,
                    inode: 0,
                    path: path.clone(),
                };
                let mapping = Arc::new(Mapping {
                    start: entry.start,
                    limit: entry.end,
                    offset: entry.offset,
                    file: entry.path.clone(),
                    build_id: binary.build_id.clone(),
                });
                (entry, Some((binary.clone(), bias)), mapping)
            })
            .collect();
        self.processes
            .insert(pid, Some(Arc::new(ProcessView { maps })));
    }

    fn binary(&mut self, path: &Path) -> Option<Arc<GoBinary>> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = fs::metadata(path).ok()?;
        let key = (meta.dev(), meta.ino());
        self.binaries
            .entry(key)
            .or_insert_with(|| GoBinary::open(path).ok().map(Arc::new))
            .clone()
    }

    fn read_process(&mut self, pid: u32) -> Option<ProcessView> {
        let entries = read_maps(pid)?;
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let exe_inode = {
            use std::os::unix::fs::MetadataExt as _;
            fs::metadata(&exe).ok().map(|m| m.ino())
        };
        let binary = self.binary(&exe);
        let mut maps = Vec::new();
        for entry in entries {
            let go = match (&binary, exe_inode) {
                (Some(binary), Some(inode)) if inode == entry.inode => binary
                    .file_offset_to_vaddr(entry.offset)
                    .map(|vaddr| (binary.clone(), entry.start.wrapping_sub(vaddr))),
                _ => None,
            };
            let mapping = Arc::new(Mapping {
                start: entry.start,
                limit: entry.end,
                offset: entry.offset,
                file: entry.path.clone(),
                build_id: go
                    .as_ref()
                    .map(|(b, _)| b.build_id.clone())
                    .unwrap_or_default(),
            });
            maps.push((entry, go, mapping));
        }
        Some(ProcessView { maps })
    }

    fn view(&mut self, pid: u32) -> Option<Arc<ProcessView>> {
        self.observe(pid);
        self.processes.get(&pid).cloned().flatten()
    }

    /// The location of runtime address `addr` in `view` (`is_return`: a return address, looked up
    /// at the call before it).
    fn locate(&mut self, view: &ProcessView, addr: u64, is_return: bool) -> Option<Location> {
        let lookup = if is_return {
            addr.wrapping_sub(1)
        } else {
            addr
        };
        let (entry, go, mapping) = view.find(lookup)?;
        let Some((binary, bias)) = go else {
            let name = Path::new(&entry.path)
                .file_name()
                .map_or_else(|| entry.path.clone(), |n| n.to_string_lossy().into_owned());
            let name = if name.is_empty() {
                "[anonymous]".into()
            } else if name.starts_with('[') {
                name // [vdso], [stack], ...
            } else {
                format!("[{name}]")
            };
            return Some(Location::native(lookup, mapping, name));
        };
        let vaddr = lookup.wrapping_sub(*bias);
        let key = (binary_key(binary), vaddr);
        let lines = match self.lines.get(&key) {
            Some(lines) => lines.clone(),
            None => {
                let lines = Arc::new(
                    binary
                        .table()
                        .map(|t| binary.go_lines(&t, vaddr))
                        .unwrap_or_default(),
                );
                self.lines.insert(key, lines.clone());
                lines
            }
        };
        if lines.is_empty() {
            let name = binary
                .native_name(vaddr)
                .map_or_else(|| format!("[{}]", file_name(&binary.path)), String::from);
            return Some(Location::native(lookup, mapping, name));
        }
        Some(Location {
            address: lookup,
            kind: Kind::Go,
            mapping: Some(mapping.clone()),
            lines: lines.to_vec(),
        })
    }

    /// The file offset that runtime address `addr` of process `pid` maps.
    pub fn file_offset(&mut self, pid: u32, addr: u64) -> Option<u64> {
        let view = self.view(pid)?;
        let (entry, _, _) = view.find(addr)?;
        Some(addr - entry.start + entry.offset)
    }

    /// The location of the instruction at file offset `offset` of the file that process `pid`
    /// maps at runtime address `near` (in the same mapping).
    pub fn locate_offset(&mut self, pid: u32, near: u64, offset: u64) -> Option<Location> {
        let view = self.view(pid)?;
        let (entry, _, _) = view.find(near)?;
        let addr = entry.start.checked_add(offset.checked_sub(entry.offset)?)?;
        if addr >= entry.end {
            return None;
        }
        self.locate(&view, addr, false)
    }

    /// The SP offset at runtime address `addr` of process view `view`, if it is Go code.
    fn sp_delta(view: &ProcessView, addr: u64) -> Option<i32> {
        let (_, go, _) = view.find(addr)?;
        let (binary, bias) = go.as_ref()?;
        let table = binary.table()?;
        let vaddr = addr.wrapping_sub(*bias);
        let f = table.find(vaddr)?;
        table.sp_delta(&f, vaddr)
    }

    /// Symbolize a user stack of process `pid`. `sp8` is the word at `rsp + 8` (amd64) or the
    /// link register (arm64) when known (profile samples).
    pub fn user_stack(
        &mut self,
        pid: u32,
        trace: &StackTrace,
        leaf: LeafContext,
        sp8: Option<u64>,
    ) -> Stack {
        let mut out = Vec::new();
        let Some(view) = self.view(pid) else {
            out.push(Location::truncated("process maps unavailable"));
            return out;
        };
        let len = (trace.len as usize).min(trace.pcs.len());
        if len == 0 {
            out.push(Location::truncated("no stack"));
            return out;
        }
        let ip = trace.pcs[0];
        let Some(leaf_loc) = self.locate(&view, ip, false) else {
            out.push(Location::truncated("PC outside any mapping"));
            return out;
        };
        let leaf_kind = leaf_loc.kind;
        out.push(leaf_loc);
        if leaf_kind != Kind::Go {
            out.push(Location::truncated("non-Go code"));
            return out;
        }
        // Rebuild the caller of the leaf from its frame state.
        let mut returns: Vec<u64> = Vec::with_capacity(len);
        // The stacks come from goprobe's own kernel programs, built for the architecture
        // goprobe runs on, which is the traced process's (goprobe-ebpf/src/arch.rs).
        let arm64 = cfg!(target_arch = "aarch64");
        match Self::sp_delta(&view, ip) {
            Some(0) => {
                if leaf.sp0 != 0 {
                    returns.push(leaf.sp0);
                }
            }
            // amd64: `rbp` points at the saved `rbp` just below the return address.
            Some(d) if !arm64 && d >= 8 && leaf.fp_off == (d as u64 - 8) => {}
            Some(8) if !arm64 && sp8.is_some() => returns.extend(sp8.filter(|&a| a != 0)),
            // arm64: x29 points at the saved x29 just below the frame (`sp - 8`); while a
            // prologue or epilogue runs (frame allocated, x29 not pointing at it) the return
            // address is in the link register, which profile samples carry as `sp8`.
            Some(d) if arm64 && d > 0 && leaf.fp_off == 8u64.wrapping_neg() => {}
            Some(d) if arm64 && d > 0 && sp8.is_some() => returns.extend(sp8.filter(|&a| a != 0)),
            _ => {
                out.push(Location::truncated("frame not set up at the PC"));
                return out;
            }
        }
        returns.extend_from_slice(&trace.pcs[1..len]);
        for ret in returns {
            let Some(loc) = self.locate(&view, ret, true) else {
                out.push(Location::truncated("return address outside any mapping"));
                return out;
            };
            let kind = loc.kind;
            let switch = kind == Kind::Go && STACK_SWITCHES.contains(&loc.function());
            out.push(loc);
            if kind != Kind::Go {
                out.push(Location::truncated("C code: frame pointers not reliable"));
                return out;
            }
            if switch {
                out.push(Location::truncated("runtime stack switch"));
                return out;
            }
        }
        // A stack that ends anywhere but where goroutines and threads start did not reach its
        // true root: say so.
        let at_root = out.last().is_some_and(|l| ROOTS.contains(&l.function()));
        match trace.end {
            stack::END_DEPTH => out.push(Location::truncated("deeper than the frame limit")),
            _ if !at_root => out.push(Location::truncated("frame chain ends")),
            _ => {}
        }
        out
    }

    /// Symbolize a kernel stack (innermost first).
    pub fn kernel_stack(&mut self, ips: &[u64]) -> Stack {
        let kernel = self.kernel.get_or_insert_with(KernelSymbols::load);
        ips.iter()
            .take_while(|&&ip| ip != 0)
            .map(|&ip| Location {
                address: ip,
                kind: Kind::Kernel,
                mapping: None,
                lines: vec![Line {
                    function: kernel
                        .name(ip)
                        .map_or_else(|| format!("[kernel {ip:#x}]"), String::from),
                    file: String::new(),
                    line: 0,
                }],
            })
            .collect()
    }
}

/// A binary's identity while the symbolizer keeps it (it never drops one).
fn binary_key(binary: &Arc<GoBinary>) -> usize {
    Arc::as_ptr(binary) as usize
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `/proc/kallsyms`, sorted.
struct KernelSymbols {
    symbols: Vec<(u64, String)>,
}

impl KernelSymbols {
    fn load() -> Self {
        let mut symbols: Vec<(u64, String)> = fs::read_to_string("/proc/kallsyms")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| (addr, name.into()))
            })
            .collect();
        symbols.sort_unstable();
        Self { symbols }
    }

    fn name(&self, ip: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|s| s.0 <= ip);
        self.symbols.get(i.checked_sub(1)?).map(|s| s.1.as_str())
    }
}

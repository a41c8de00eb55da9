//! Robustness of the inspect layer against hostile input: ~24k random and mutated files
//! (random bytes, mutations of a synthetic Go ELF, of synthetic pclntabs in every layout, and
//! of a real Go binary and its pclntab) must each give `Ok` or `Err`, never a panic, an
//! out-of-bounds read or a runaway allocation. Deterministic (fixed seeds); a failing input is
//! saved under the cargo target tmpdir. `GOPROBE_FUZZ_SCALE=N` multiplies the iterations.
//!
//! The open-ended version of this test is the cargo-fuzz target in `fuzz/`.

use goprobe_inspect as inspect;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
    process::Command,
    time::Instant,
};

use inspect::{
    BinaryIndex,
    pclntab::{
        PclnVersion, Pclntab,
        synth::{SynthFunc, build},
    },
    testelf::ElfSpec,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: plenty for choosing mutations.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn scale() -> usize {
    std::env::var("GOPROBE_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Values that tend to break parsers: zero, one, sign bits, all-ones, and lengths near the data.
fn interesting(rng: &mut Rng, len: usize) -> u64 {
    let v = [
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        u64::MAX,
        i64::MAX as u64,
        len as u64,
        len as u64 - 1,
        0x40_1000,
    ];
    v[rng.below(v.len())]
}

/// Mutate `data`, mostly inside `hot` ranges (headers, tables) where mutations reach deep code.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, hot: &[(usize, usize)]) {
    if data.is_empty() {
        return;
    }
    let pos = |rng: &mut Rng, len: usize| -> usize {
        if !hot.is_empty() && rng.below(4) != 0 {
            let (a, b) = hot[rng.below(hot.len())];
            let (a, b) = (a.min(len - 1), b.min(len));
            a + rng.below(b.saturating_sub(a).max(1))
        } else {
            rng.below(len)
        }
    };
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        if len == 0 {
            return;
        }
        match rng.below(6) {
            0 => {
                let p = pos(rng, len);
                data[p] ^= 1 << rng.below(8);
            }
            1 => {
                let p = pos(rng, len);
                data[p] = rng.next() as u8;
            }
            2 | 3 => {
                let size = [2, 4, 8][rng.below(3)];
                let p = pos(rng, len).min(len.saturating_sub(size));
                let v = interesting(rng, len).to_le_bytes();
                let n = size.min(len - p);
                data[p..p + n].copy_from_slice(&v[..n]);
            }
            4 => {
                let cut = pos(rng, len);
                data.truncate(cut);
            }
            _ => {
                // Copy a chunk elsewhere: moves plausible structures to wrong places.
                let from = pos(rng, len);
                let to = pos(rng, len);
                let n = rng.below(64).min(len - from).min(len - to);
                data.copy_within(from..from + n, to);
            }
        }
    }
}

fn save_and_fail(name: &str, input: &[u8], what: &str) -> ! {
    let path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("inspect_fuzz_failure_{name}.bin"));
    std::fs::write(&path, input).unwrap();
    panic!("{what} panicked on input saved to {}", path.display());
}

/// Index `data` and, when that succeeds, exercise everything a caller would: code bytes, probe
/// sites, lookups, and both report formats.
fn exercise_index(name: &str, data: Vec<u8>, max_sites: usize) -> bool {
    let keep = data.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let Ok(idx) = BinaryIndex::parse(PathBuf::from("/fuzz"), data) else {
            return false;
        };
        for f in idx.functions.iter().take(max_sites) {
            let _ = idx.function_code(f);
            if let Ok(s) = idx.probe_sites(f) {
                let _ = idx.vaddr_to_file_offset(s.entry);
            }
            let _ = idx.find(&f.name);
            let _ = idx.function_at(f.addr.wrapping_add(f.size / 2));
        }
        if idx.functions.len() <= max_sites {
            for copy in idx.inlined_copies(&|_| true) {
                let _ = idx.inline_sites(&copy);
            }
        }
        true
    }));
    r.unwrap_or_else(|_| save_and_fail(name, &keep, "BinaryIndex::parse"))
}

fn exercise_pclntab(name: &str, data: &[u8]) -> bool {
    let r = catch_unwind(|| {
        let Ok(t) = Pclntab::parse(data) else {
            return false;
        };
        let _ = t.header_text_start();
        let _ = t.end_pc(0x40_1000);
        let _ = t.first_entry_raw();
        for i in [0, t.len() / 2, t.len().saturating_sub(1), t.len()] {
            let _ = t.func(i, 0x40_1000);
        }
        t.functions(0x40_1000).is_ok()
    });
    r.unwrap_or_else(|_| save_and_fail(name, data, "Pclntab::parse"))
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 * scale() {
        let len = rng.below(2048);
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half get a valid ELF64 ident so they reach the header and program-header parsing.
        if i % 2 == 0 && data.len() >= 20 {
            data[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
            data[16] = 2;
            data[18] = 62;
        }
        exercise_index("random", data.clone(), 64);
        exercise_pclntab("random", &data);
    }
}

#[test]
fn mutated_synthetic_go_elfs_never_panic() {
    let specs = [
        ElfSpec::default(),
        ElfSpec {
            symtab: false,
            ..ElfSpec::default()
        },
        ElfSpec {
            symtab: false,
            section_headers: false,
            ..ElfSpec::default()
        },
        ElfSpec {
            pie: true,
            symtab: false,
            moduledata: false,
            header_text: true,
            ..ElfSpec::default()
        },
        ElfSpec {
            symtab: false,
            pcln_version: PclnVersion::Go116,
            old_buildinfo: true,
            ..ElfSpec::default()
        },
        ElfSpec {
            pcln_version: PclnVersion::Go12,
            old_buildinfo: true,
            ..ElfSpec::default()
        },
    ];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut ok, mut total) = (0, 0);
    for spec in &specs {
        let base = spec.build();
        assert!(
            exercise_index("synthetic-base", base.clone(), usize::MAX),
            "the unmutated base must parse"
        );
        let shoff = u64::from_le_bytes(base[40..48].try_into().unwrap()) as usize;
        // ELF header + program headers, code, pclntab, build info + moduledata, symtab..shdrs.
        let hot = [
            (0, 0x120),
            (0x1000, 0x1080),
            (0x2000, 0x2000 + spec.pclntab().len()),
            (0x3000, 0x3200),
            (0x4000, shoff + 64 * 12),
        ];
        for _ in 0..2000 * scale() {
            let mut data = base.clone();
            mutate(&mut rng, &mut data, &hot);
            total += 1;
            ok += usize::from(exercise_index("synthetic", data, usize::MAX));
        }
    }
    eprintln!("synthetic ELF mutations: {ok}/{total} still parsed");
}

#[test]
fn mutated_synthetic_pclntabs_never_panic() {
    let names: Vec<String> = (0..100)
        .map(|i| format!("pkg/path.(*Type{i}).Method{i}"))
        .collect();
    let funcs: Vec<SynthFunc<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| SynthFunc {
            name: n,
            off: i as u64 * 0x40,
            size: 0x40,
        })
        .collect();
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for version in [
        PclnVersion::Go12,
        PclnVersion::Go116,
        PclnVersion::Go118,
        PclnVersion::Go120,
    ] {
        let base = build(version, 0x40_1000, 0x40_1000, &funcs);
        assert!(exercise_pclntab("pclntab-base", &base));
        let hot = [(0, 0x60), (base.len() - 100 * 24, base.len())];
        for _ in 0..1000 * scale() {
            let mut data = base.clone();
            mutate(&mut rng, &mut data, &hot);
            exercise_pclntab("pclntab", &data);
        }
    }
}

/// A small real Go binary: one left by `inspect_go`, else built now with the first Go found.
fn real_go_binary() -> Option<PathBuf> {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(rd) = std::fs::read_dir(tmp.join("inspect_go")) {
        let mut found: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path().join("stripped"))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Some(p);
        }
    }
    let go = std::env::var("GOPROBE_GO_TOOLCHAINS")
        .ok()
        .and_then(|l| l.split(',').next().map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("/usr/lib/go-1.19/bin/go")).filter(|p| p.exists()))
        .unwrap_or_else(|| PathBuf::from("go"));
    let dir = tmp.join("inspect_fuzz_hello");
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("go.mod"), "module hello\n\ngo 1.19\n").ok()?;
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n",
    )
    .ok()?;
    let out = dir.join("hello");
    let mut c = Command::new(go);
    c.current_dir(&dir)
        .args(["build", "-ldflags=-s -w", "-o"])
        .arg(&out)
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0");
    for (var, sub) in [("GOPATH", "gopath"), ("GOCACHE", "gocache")] {
        if std::env::var_os(var).is_none() {
            c.env(var, tmp.join("inspect_go").join(sub));
        }
    }
    c.output().ok().filter(|o| o.status.success()).map(|_| out)
}

fn section(file: &[u8], name: &str) -> Option<(usize, usize)> {
    use object::{Object, ObjectSection};
    let obj = object::File::parse(file).ok()?;
    let (off, size) = obj.section_by_name(name)?.file_range()?;
    Some((off as usize, size as usize))
}

#[test]
fn mutated_real_go_binary_never_panics() {
    let Some(path) = real_go_binary() else {
        eprintln!("SKIP: no Go toolchain to build a real binary (synthetic mutations still ran)");
        return;
    };
    let t = Instant::now();
    let file = std::fs::read(&path).unwrap();
    let (pcln_off, pcln_len) = section(&file, ".gopclntab")
        .or_else(|| section(&file, ".data.rel.ro.gopclntab"))
        .expect("pclntab section");
    let mut rng = Rng(0x0bad_c0de_1234_5678);

    // The real pclntab, its function count capped so each parse stays cheap while every field
    // still has real values.
    let mut pcln = file[pcln_off..pcln_off + pcln_len].to_vec();
    let (nfunc, functab, funcnames) = {
        let real = Pclntab::parse(&pcln).unwrap();
        (
            real.len(),
            real.pcln_offset() as usize,
            real.funcname_offset() as usize,
        )
    };
    let capped = nfunc.min(300);
    pcln[8..16].copy_from_slice(&(capped as u64).to_le_bytes());
    assert!(exercise_pclntab("real-pclntab-base", &pcln));
    let hot = [
        (0, 0x48),
        (functab, functab + (2 * capped + 1) * 4),
        (funcnames, funcnames + 0x400),
    ];
    for _ in 0..3000 * scale() {
        let mut data = pcln.clone();
        mutate(&mut rng, &mut data, &hot);
        exercise_pclntab("real-pclntab", &data);
    }

    // The whole binary, mutated in its ELF headers, pclntab header and functab, and build info.
    assert!(exercise_index("real-base", file.clone(), usize::MAX));
    let shoff = u64::from_le_bytes(file[40..48].try_into().unwrap()) as usize;
    let buildinfo = section(&file, ".go.buildinfo").map_or((0, 0), |(o, l)| (o, o + l));
    let hot = [
        (0, 0x200),
        (pcln_off, pcln_off + 0x48),
        (pcln_off + functab, pcln_off + functab + 0x1000),
        buildinfo,
        (shoff, file.len()),
    ];
    let mut ok = 0;
    let n = 2000 * scale();
    for _ in 0..n {
        let mut data = file.clone();
        mutate(&mut rng, &mut data, &hot);
        ok += usize::from(exercise_index("real", data, 16));
    }
    eprintln!(
        "{}: {ok}/{n} mutated binaries still parsed; {:.1?}",
        path.display(),
        t.elapsed()
    );
}

#[test]
fn huge_counts_do_not_allocate() {
    // nfunc near usize::MAX with a tiny table must be refused before any allocation.
    let mut data = build(
        PclnVersion::Go120,
        0,
        0,
        &[SynthFunc {
            name: "a",
            off: 0,
            size: 1,
        }],
    );
    for n in [u64::MAX, u64::MAX / 2, 1 << 40, 1 << 28] {
        data[8..16].copy_from_slice(&n.to_le_bytes());
        assert!(Pclntab::parse(&data).is_err());
    }
}

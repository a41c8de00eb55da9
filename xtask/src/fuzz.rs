//! `cargo xtask fuzz [--seconds N]`: every libFuzzer target of `fuzz/` for N seconds, with
//! cargo-fuzz and the eBPF nightly (libFuzzer's instrumentation needs a nightly). The corpora
//! live in `fuzz/corpus/<target>` (not committed) and are seeded on every run: the binary
//! readers with the Go test programs that `cargo xtask build` made (a real binary takes the
//! fuzzer past the ELF header at once), or sections cut from them; the parsers of user input
//! with the forms the README documents. A crash fails the run; libFuzzer leaves the input in
//! `fuzz/artifacts/<target>/`.
//!
//! Without a sanitizer: the code under test is safe Rust, where a bug shows as a panic, which
//! libFuzzer catches as it is; AddressSanitizer would make each run of a whole Go binary several
//! times slower and rebuild everything. `cargo xtask test`'s short pass starts from the seeds
//! alone (a fresh corpus under `fuzz/target/`), so its length does not grow with what earlier
//! runs found; libFuzzer reads a whole corpus before its time limit counts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{
    gobuild, tools,
    util::{self, cmd},
};

/// A fuzz target and what libFuzzer needs for it.
struct Target {
    name: &'static str,
    /// The longest input: the binary readers take whole Go binaries (~2 MB).
    max_len: usize,
}

const TARGETS: &[Target] = &[
    Target {
        name: "parse_binary",
        max_len: 4_000_000,
    },
    Target {
        name: "parse_pclntab",
        max_len: 1_000_000,
    },
    Target {
        name: "parse_dwarf",
        max_len: 4_000_000,
    },
    Target {
        name: "parse_config",
        max_len: 16_384,
    },
    Target {
        name: "parse_time",
        max_len: 256,
    },
    Target {
        name: "parse_pattern",
        max_len: 4096,
    },
    Target {
        name: "parse_query",
        max_len: 4096,
    },
];

fn fuzz_dir() -> PathBuf {
    util::root().join("fuzz")
}

/// Which corpus a run grows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Corpus {
    /// `fuzz/corpus/<target>`, kept from run to run (`cargo xtask fuzz`).
    Kept,
    /// The seeds alone, in a fresh directory (`cargo xtask test`), and fewer Go binaries.
    Fresh,
}

/// Run every target for `seconds` each; fails if any target finds a crash.
pub fn run(seconds: u64, mode: Corpus) -> Result<()> {
    let nightly = tools::ebpf_nightly()?;
    tools::cargo_fuzz()?;
    let root = match mode {
        Corpus::Kept => fuzz_dir().join("corpus"),
        Corpus::Fresh => {
            let dir = fuzz_dir().join("target/test-corpus");
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            dir
        }
    };
    seed_corpora(&root, mode)?;
    let mut failed = Vec::new();
    for target in TARGETS {
        let corpus = root.join(target.name);
        // cargo-fuzz builds with the nightly through rustup's proxy (the `cargo` xtask runs
        // under is the workspace's stable one, which cannot build with sanitizers).
        let mut c = cmd("cargo");
        c.env("RUSTUP_TOOLCHAIN", &nightly)
            .env_remove("CARGO")
            .args(["fuzz", "run", "--sanitizer", "none", target.name])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-max_len={}", target.max_len))
            // One slow input (a whole Go binary takes about a second) is a finding, not a hang.
            .arg("-timeout=20")
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=0")
            .current_dir(fuzz_dir());
        if let Err(e) = util::step(&format!("fuzz {} ({seconds}s)", target.name), || {
            util::run(&mut c)
        }) {
            eprintln!("fuzz: {} failed: {e:#}", target.name);
            failed.push(target.name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/<target>/)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Write the seed inputs into each target's corpus directory (overwriting earlier seeds of the
/// same name, keeping what the fuzzer found).
fn seed_corpora(root: &Path, mode: Corpus) -> Result<()> {
    let corpus = |name: &str| -> Result<PathBuf> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    };
    let write = |dir: &Path, name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };

    // Real Go binaries, as `cargo xtask build` left them (any Go version that is there). Each
    // run of `parse_binary` on one takes about a second: the short pass takes the oldest Go's
    // plain build and the newest's stripped one.
    let mut binaries = go_binaries();
    if mode == Corpus::Fresh && binaries.len() > 2 {
        let newest_stripped = binaries
            .iter()
            .rposition(|(label, _)| label.ends_with("-stripped"))
            .unwrap_or(binaries.len() - 1);
        binaries = vec![binaries[0].clone(), binaries[newest_stripped].clone()];
    }
    if binaries.is_empty() {
        eprintln!(
            "fuzz: no Go test programs in {} (run `cargo xtask build`): the binary readers start from an empty corpus",
            gobuild::output_dir().display()
        );
    }
    let (elf, pclntab, dwarf) = (
        corpus("parse_binary")?,
        corpus("parse_pclntab")?,
        corpus("parse_dwarf")?,
    );
    for (label, path) in &binaries {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        write(&elf, &format!("seed-{label}"), &bytes)?;
        if !label.contains("stripped") {
            write(&dwarf, &format!("seed-{label}"), &bytes)?;
        }
        if let Some(section) = elf_section(&bytes, ".gopclntab") {
            write(&pclntab, &format!("seed-{label}"), section)?;
        }
    }

    let config = corpus("parse_config")?;
    let agent_toml = util::root().join("deploy/agent.toml");
    if let Ok(text) = std::fs::read(&agent_toml) {
        write(&config, "seed-deploy-agent.toml", &text)?;
    }
    for (i, text) in CONFIG_SEEDS.iter().enumerate() {
        write(&config, &format!("seed-{i}"), text.as_bytes())?;
    }
    for (target, seeds) in [
        ("parse_time", TIME_SEEDS),
        ("parse_pattern", PATTERN_SEEDS),
        ("parse_query", QUERY_SEEDS),
    ] {
        let dir = corpus(target)?;
        for (i, text) in seeds.iter().enumerate() {
            write(&dir, &format!("seed-{i}"), text.as_bytes())?;
        }
    }
    Ok(())
}

/// `count` from each built Go version and variant (it is small and has inlined calls), labelled
/// `go1.NN-variant`.
fn go_binaries() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(versions) = std::fs::read_dir(gobuild::output_dir()) else {
        return found;
    };
    let mut versions: Vec<_> = versions.flatten().map(|e| e.path()).collect();
    versions.sort();
    for version in versions {
        for variant in ["default", "stripped", "pie"] {
            let path = version.join(variant).join("count");
            if path.is_file() {
                let label = format!(
                    "{}-{variant}",
                    version.file_name().unwrap_or_default().to_string_lossy()
                );
                found.push((label, path));
            }
        }
    }
    found
}

/// The bytes of section `name` of a little-endian ELF64 file, if it has one (enough for the
/// Go binaries the tests build; anything else gives None).
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let strtab = usize::try_from(u64_at(header(shstrndx)? + 0x18)?).ok()?;
    (0..shnum).find_map(|i| {
        let h = header(i)?;
        let name_at = strtab.checked_add(usize::try_from(u32_at(h)?).ok()?)?;
        let rest = elf.get(name_at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        if &rest[..end] != name.as_bytes() {
            return None;
        }
        let offset = usize::try_from(u64_at(h + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(h + 0x20)?).ok()?;
        elf.get(offset..offset.checked_add(size)?)
    })
}

const CONFIG_SEEDS: &[&str] = &[
    "[[probe]]\nfunctions = [\"go:main.handle*\"]\n",
    "[agent]\nscan_interval = \"200ms\"\n[http]\nlisten = \"0.0.0.0:9000\"\nbearer_token_file = \"/etc/goprobe/token\"\n[histogram]\nbuckets = [0.001, 0.01, 0.1]\npid_label = true\nidle_series_ttl = \"10m\"\n[archive]\npath = \"/tmp/a.redb\"\ninterval = \"1s\"\nretention = \"7d\"\nmax_size = \"100MiB\"\n[otlp]\nendpoint = \"http://127.0.0.1:4318/v1/metrics\"\nhistogram = \"exponential\"\n[profile]\nenabled = true\nfrequency = 99\n[kubernetes]\nkubelet_pods_url = \"http://${NODE_NAME}:10255/pods\"\n[[probe]]\nname = \"web\"\nfunctions = [\"go:net/http.(*conn).serve\", \"go:main.*\"]\nservice = \"web\"\nexe = [\"/usr/local/bin/*\", \"/opt/**/bin/*\"]\nprocess = [\"web*\"]\ncontainer = [\"*\"]\npod = [\"web-*\"]\n",
    "# [[probe]] in a comment\n[[probe]]\nfunctions = [\"go:^main\\\\.(a|b)$\"]\nregex = true\n",
    "probe = [{ functions = [\"go:a\"] }, { functions = [] }]\n",
];

const TIME_SEEDS: &[&str] = &[
    "now",
    "-5m",
    "1h ago",
    "-1h..now",
    "-2h..-1h",
    "@1767225600",
    "@1700000000.5..@1700003600",
    "2026-11-27T10:00:00Z",
    "2026-11-27 10:00:00",
    "2026-11-27T09:00:00Z..2026-11-27T10:00:00Z",
    "@253402300799.999",
    "@1e300",
    "@nan",
    "10ms",
    "1.5s",
    "250us",
];

const PATTERN_SEEDS: &[&str] = &[
    "\0go:main.handle*",
    "\0go:net/http.(*conn).serve",
    "\0/usr/bin/app:main.run",
    "\0main.goprobeE2E?ount",
    "\x01go:^main\\.(a|b)$",
    "\x01go:(?i)handler",
    "\x01main\\..*",
];

const QUERY_SEEDS: &[&str] = &[
    "from=-1h&to=now",
    "from=@1767225600&to=@1767229200&function=main.handle%2A",
    "base=-2h..-1h&compare=-1h..now&function=main.%28%2AT%29.Get",
    "from=-30m&pid=4242",
    "from=2026-11-27T09%3A00%3A00Z&to=2026-11-27T10%3A00%3A00Z",
    "from=%40nan&to=%2",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_section_of_a_real_elf() {
        // The running test binary is an ELF64 little-endian file with a .text section.
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert!(elf_section(&exe, ".text").is_some_and(|s| !s.is_empty()));
        assert!(elf_section(&exe, ".no-such-section").is_none());
        assert!(elf_section(b"\x7fELF\x02\x01garbage", ".text").is_none());
    }
}

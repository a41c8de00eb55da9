//! `cargo xtask test-arm64`: goprobe built for arm64 traces arm64 Go programs in an emulated
//! arm64 machine (QEMU system emulation, TCG), on two Debian kernels: bookworm's 6.1 (per-site
//! uprobes, no uprobe_multi) and bookworm-backports' 6.12 (uprobe_multi).
//!
//! * The VM boots the kernel's plain arm64 Image with `-kernel`, no firmware. Its initramfs is two
//!   gzipped cpio archives one after the other (the kernel unpacks both): a Debian arm64 minbase
//!   root filesystem made once by mmdebstrap and cached, and a small one per kernel with
//!   `tests/arm64/init`, the kernel's 9p and virtio modules and a static `insmod`
//!   (`tests/arm64/insmod.c`: minbase has no kmod).
//! * Binaries and results go through a virtio-9p share (`target/arm64-vm/share`): goprobe, the
//!   Go test programs (Go 1.19 and 1.27, default and stripped) and `tests/arm64/vm-test.sh`, which
//!   runs the cases and writes `PASS`/`FAIL` lines, checked here.
//! * Caches (kernel packages, root filesystem, `insmod`) live in `~/.cache/goprobe/arm64`, so a
//!   second run on the same machine downloads nothing.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{self, cmd};

pub const TARGET: &str = "aarch64-unknown-linux-gnu";

/// The kernels the VM boots: a name, and how apt names Debian's arm64 kernel metapackage in the
/// release that has it (bookworm's own, or bookworm-backports; the metapackage depends on the
/// current kernel package, whose ABI number Debian bumps).
const KERNELS: &[(&str, &str)] = &[
    ("6.1", "linux-image-arm64:arm64"),
    ("6.12", "linux-image-arm64:arm64/bookworm-backports"),
];

/// The modules that the 9p share needs, in load order (those built into a kernel are missing
/// from its package and skipped).
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "drivers/virtio/virtio_mmio",
    "fs/netfs/netfs",
    "fs/fscache/fscache",
    "net/9p/9pnet",
    "net/9p/9pnet_virtio",
    "fs/9p/9p",
];

/// The Go programs of `tests/go` the VM traces.
const PROGRAMS: &[&str] = &[
    "count",
    "sleep",
    "recurse",
    "morestack",
    "panics",
    "hello",
    "callers",
    "cpuhot",
];

fn cache() -> PathBuf {
    util::home().join(".cache/goprobe/arm64")
}

fn vm_dir() -> PathBuf {
    util::root().join("target/arm64-vm")
}

/// The share with goprobe for arm64, the scripts and the Go programs; the insmod and root
/// filesystem caches.
fn prepare() -> Result<(PathBuf, PathBuf, PathBuf)> {
    util::step("build goprobe for arm64", || crate::build_agent_for(TARGET))?;
    let share = vm_dir().join("share");
    if share.exists() {
        fs::remove_dir_all(&share)?;
    }
    fs::create_dir_all(share.join("out"))?;
    fs::copy(
        util::root().join(format!("target/{TARGET}/release/goprobe")),
        share.join("goprobe"),
    )?;
    for script in ["vm-test.sh", "vm-bench.sh"] {
        fs::copy(
            util::root().join("tests/arm64").join(script),
            share.join(script),
        )?;
    }
    util::step("build Go programs for arm64", || {
        build_go(&share.join("go"))
    })?;
    let insmod = util::step("insmod for the VM", insmod)?;
    let rootfs = util::step("arm64 root filesystem", rootfs)?;
    Ok((share, insmod, rootfs))
}

/// Boot kernel `name` to run `script` from the share; its `results` file afterwards.
fn run_vm(
    name: &str,
    package: &str,
    script: &str,
    share: &Path,
    insmod: &Path,
    rootfs: &Path,
) -> Result<String> {
    let (image, extra) = util::step(&format!("kernel {name}"), || kernel(name, package, insmod))?;
    let initrd = vm_dir().join(format!("initrd-{name}"));
    let mut both = fs::read(rootfs)?;
    both.extend(fs::read(&extra)?);
    fs::write(&initrd, both)?;
    util::step(&format!("VM on kernel {name}"), || {
        boot(name, script, &image, &initrd, share)
    })?;
    let results = share.join("out").join(name).join("results");
    Ok(fs::read_to_string(&results).unwrap_or_default())
}

pub fn test() -> Result<()> {
    let start = Instant::now();
    let (share, insmod, rootfs) = prepare()?;
    let mut failures = Vec::new();
    for &(name, package) in KERNELS {
        let vm_start = Instant::now();
        let text = run_vm(name, package, "vm-test.sh", &share, &insmod, &rootfs)?;
        eprintln!(
            "arm64 on kernel {name} ({:.0}s in the VM):\n{text}",
            vm_start.elapsed().as_secs_f64()
        );
        failures.extend(
            text.lines()
                .filter(|l| l.starts_with("FAIL"))
                .map(|l| format!("{name}: {l}")),
        );
        failures.extend(check_profiles(&share.join("out").join(name))?);
        if !text.lines().any(|l| l == "DONE") {
            failures.push(format!(
                "{name}: the VM did not finish its cases (see {})",
                share.join("out").join(name).join("log").display()
            ));
        }
    }
    eprintln!(
        "test-arm64: {} ({:.0}s in all)",
        if failures.is_empty() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("arm64 end-to-end cases failed:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// The hot function of `tests/go/cpuhot`, which must top its profile.
const HOT: &str = "main.goprobeE2EHot";

/// Read back every profile the VM wrote with `go tool pprof -top` on the host: the hot function
/// must be the first row. Returns what failed.
fn check_profiles(out: &Path) -> Result<Vec<String>> {
    let go = util::home().join(".cache/goprobe/go/1.27.3/bin/go");
    let mut failures = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-profile.pb.gz"))
        .collect();
    files.sort();
    if files.is_empty() {
        failures.push(format!("{}: no profile written", out.display()));
    }
    for file in files {
        let top = util::output(
            cmd(&go)
                .args(["tool", "pprof", "-top"])
                .arg(&file)
                .env("GOTOOLCHAIN", "local"),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
        let first = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or_default();
        if first.ends_with(HOT) {
            eprintln!("PASS {}: go tool pprof -top: {first}", file.display());
        } else {
            failures.push(format!("{}: {HOT} is not on top:\n{top}", file.display()));
        }
    }
    Ok(failures)
}

/// `cargo xtask bench-arm64`: `tests/arm64/vm-bench.sh` in the VM on the 6.12 kernel; prints the
/// rows of BENCHMARKS.md's arm64 section.
pub fn bench() -> Result<()> {
    let (share, insmod, rootfs) = prepare()?;
    let &(name, package) = KERNELS.last().context("no kernel")?;
    let text = run_vm(name, package, "vm-bench.sh", &share, &insmod, &rootfs)?;
    if !text.lines().any(|l| l == "DONE") {
        bail!(
            "the benchmark did not finish (see {})",
            share.join("out").join(name).join("log").display()
        );
    }
    let rows = fs::read_to_string(share.join("out").join(name).join("bench.md"))?;
    println!("{rows}");
    Ok(())
}

/// The test programs for arm64, `<dir>/<go1.NN>/<default|stripped>/<program>`.
fn build_go(dir: &Path) -> Result<()> {
    let go127 = util::home().join(".cache/goprobe/go/1.27.3/bin/go");
    let toolchains = [
        ("go1.19", PathBuf::from("/usr/lib/go-1.19/bin/go")),
        ("go1.27", go127),
    ];
    let target = util::root().join("target");
    for (name, go) in &toolchains {
        for (variant, flags) in [("default", None), ("stripped", Some("-ldflags=-s -w"))] {
            let out = dir.join(name).join(variant);
            fs::create_dir_all(&out)?;
            let mut c = cmd(go);
            c.arg("build").args(flags);
            c.arg(format!("-o={}/", out.display()))
                .args(PROGRAMS.iter().map(|p| format!("./{p}")))
                .current_dir(util::root().join("tests/go"))
                .env_remove("GOROOT")
                .env_remove("GOBIN")
                .env("GOARCH", "arm64")
                .env("CGO_ENABLED", "0")
                .env("GOTOOLCHAIN", "local")
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .env("GOWORK", "off")
                .env("GOENV", "off")
                .env("GOPATH", target.join("go-path"))
                .env("GOCACHE", target.join("go-cache"));
            util::run(&mut c).with_context(|| format!("building {name} {variant} for arm64"))?;
        }
    }
    Ok(())
}

/// A static arm64 `insmod` (finit_module), built once.
fn insmod() -> Result<PathBuf> {
    let out = cache().join("insmod");
    let src = util::root().join("tests/arm64/insmod.c");
    if util::mtime(&out) >= util::mtime(&src) && out.exists() {
        return Ok(out);
    }
    fs::create_dir_all(cache())?;
    util::run(
        cmd("aarch64-linux-gnu-gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&src),
    )?;
    Ok(out)
}

/// The root filesystem as a gzipped cpio archive: Debian bookworm arm64 minbase plus binutils
/// (objdump, to look at code in the VM), made once (a few minutes under qemu-user).
fn rootfs() -> Result<PathBuf> {
    let out = cache().join("rootfs-binutils.cpio.gz");
    if out.exists() {
        return Ok(out);
    }
    let dir = cache().join("rootfs-binutils");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    util::run(
        cmd("mmdebstrap")
            .args([
                "--architectures=arm64",
                "--variant=minbase",
                "--include=binutils",
                "bookworm",
            ])
            .arg(&dir),
    )?;
    cpio_gz(&dir, &out)?;
    fs::remove_dir_all(&dir)?;
    Ok(out)
}

/// `dir` as a gzipped newc cpio archive at `out`, as the kernel's initramfs takes it.
fn cpio_gz(dir: &Path, out: &Path) -> Result<()> {
    let tmp = out.with_extension("tmp");
    util::run(
        cmd("sh")
            .arg("-c")
            .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
            .arg(&tmp)
            .current_dir(dir),
    )?;
    fs::rename(&tmp, out)?;
    Ok(())
}

/// The kernel's Image, and the small initramfs of this kernel (init, insmod, modules).
fn kernel(name: &str, package: &str, insmod: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = cache().join("kernels").join(name);
    fs::create_dir_all(&dir)?;
    let find_deb = || -> Result<Option<PathBuf>> {
        Ok(fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb")))
    };
    let deb = match find_deb()? {
        Some(deb) => deb,
        None => {
            // bookworm-backports must be an apt source for 6.12 (`cargo xtask setup`).
            let depends = util::stdout(cmd("apt-cache").args(["depends", package]))?;
            let image = depends
                .lines()
                .find_map(|l| l.trim().strip_prefix("Depends: "))
                .filter(|p| p.starts_with("linux-image-"))
                .with_context(|| format!("apt-cache depends {package}: no kernel package"))?
                .to_string();
            util::run(cmd("apt-get").args(["download", &image]).current_dir(&dir))?;
            find_deb()?.context("apt-get download left no .deb")?
        }
    };
    let tree = dir.join("tree");
    if !tree.exists() {
        fs::create_dir_all(&tree)?;
        util::run(
            cmd("sh")
                .arg("-c")
                .arg("dpkg-deb --fsys-tarfile \"$0\" | tar -x -C \"$1\" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/fs/9p/*' './lib/modules/*/kernel/fs/netfs/*' './lib/modules/*/kernel/fs/fscache/*' './lib/modules/*/kernel/net/9p/*' 2>/dev/null; true")
                .arg(&deb)
                .arg(&tree),
        )?;
    }
    let image = fs::read_dir(tree.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .context("no vmlinuz in the kernel package")?;
    let modules_root = fs::read_dir(tree.join("lib/modules"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .context("no modules in the kernel package")?
        .join("kernel");

    let extra = vm_dir().join(format!("extra-{name}"));
    if extra.exists() {
        fs::remove_dir_all(&extra)?;
    }
    fs::create_dir_all(extra.join("modules"))?;
    let mut order = String::new();
    for m in MODULES {
        let base = m.rsplit('/').next().unwrap_or(m);
        let plain = modules_root.join(format!("{m}.ko"));
        let xz = modules_root.join(format!("{m}.ko.xz"));
        let dest = extra.join("modules").join(format!("{base}.ko"));
        if plain.exists() {
            fs::copy(&plain, &dest)?;
        } else if xz.exists() {
            let out = util::output(cmd("xz").args(["-dc"]).arg(&xz))?;
            fs::write(&dest, out.stdout)?;
        } else {
            continue;
        }
        order.push_str(&format!("{base}.ko\n"));
    }
    fs::write(extra.join("modules/order"), order)?;
    fs::copy(util::root().join("tests/arm64/init"), extra.join("init"))?;
    fs::copy(insmod, extra.join("insmod"))?;
    let archive = vm_dir().join(format!("extra-{name}.cpio.gz"));
    cpio_gz(&extra, &archive)?;
    Ok((image, archive))
}

/// Boot the VM; it runs `vm-test.sh` from the share and powers off.
fn boot(name: &str, script: &str, image: &Path, initrd: &Path, share: &Path) -> Result<()> {
    util::run(
        cmd("nice")
            .args(["timeout", "900", "qemu-system-aarch64"])
            .args(["-M", "virt", "-cpu", "max,pauth-impdef=on"])
            .args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", "2048"])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(image)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyAMA0 panic=-1 quiet goprobe_kernel={name} goprobe_script={script}"
            ))
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=share,security_model=none,id=share",
                share.display()
            ))
            .stdin(std::process::Stdio::null()),
    )
}

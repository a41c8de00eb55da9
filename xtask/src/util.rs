//! Small helpers shared by the subcommands: paths, running commands, timing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};

/// The workspace root: xtask lives in `<root>/xtask`.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// `$HOME`, where the per-user tool directories live (`~/.cargo`, `~/.cache`).
pub fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// `$CARGO_HOME` (default `~/.cargo`): bpf-linker is installed to `<cargo home>/bin`.
pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(|| home().join(".cargo"), PathBuf::from)
}

/// The cargo that runs xtask (`cargo run` sets `$CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A command without the library path `cargo run` gave xtask (target/ and the toolchain's own
/// lib directories), so the programs we start do not see it. RUSTUP_TOOLCHAIN stays: rustup
/// set it for xtask, and a child cargo needs it, because cargo runs rustc inside each
/// dependency's own directory, where no rust-toolchain.toml says which toolchain to use.
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        let target = root().join("target");
        let rustup =
            std::env::var_os("RUSTUP_HOME").map_or_else(|| home().join(".rustup"), PathBuf::from);
        let kept: Vec<PathBuf> = std::env::split_paths(&paths)
            .filter(|p| !p.starts_with(&target) && !p.starts_with(&rustup))
            .collect();
        if kept.is_empty() {
            c.env_remove("LD_LIBRARY_PATH");
        } else {
            c.env(
                "LD_LIBRARY_PATH",
                std::env::join_paths(kept).expect("paths came from a path list"),
            );
        }
    }
    c
}

/// How a command is shown to the user: `prog arg arg`.
pub fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; fails unless it exits 0.
pub fn run(c: &mut Command) -> Result<()> {
    eprintln!("$ {}", show(c));
    let status = c
        .status()
        .with_context(|| format!("cannot start `{}`", show(c)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(c));
    }
    Ok(())
}

/// Runs a command and captures its output; fails unless it exits 0 (the output is then part of
/// the error).
pub fn output(c: &mut Command) -> Result<Output> {
    let out = c
        .output()
        .with_context(|| format!("cannot start `{}`", show(c)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            show(c),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// The stdout of a command that must succeed, as a trimmed string.
pub fn stdout(c: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&output(c)?.stdout)
        .trim()
        .to_string())
}

/// Whether the process runs as root (effective uid 0), read from /proc so std suffices.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Runs `f` as a named step and prints how long it took.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("==> {name}");
    let start = Instant::now();
    let r = f();
    let secs = start.elapsed().as_secs_f64();
    match &r {
        Ok(_) => eprintln!("<== {name}: ok in {secs:.1}s"),
        Err(e) => eprintln!("<== {name}: FAILED in {secs:.1}s: {e:#}"),
    }
    r
}

/// Modification time of a file, or None when it does not exist.
pub fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of any file under `dir` (recursively).
pub fn newest_mtime(dir: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let t = if entry.file_type()?.is_dir() {
            newest_mtime(&entry.path())?
        } else {
            entry.metadata()?.modified()?
        };
        newest = newest.max(t);
    }
    Ok(newest)
}

/// Searches PATH for an executable name.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

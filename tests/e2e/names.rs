//! `goprobe symbols` against Go's own `debug/gosym` (tests/go/gosymref, built by the newest Go
//! of the run, since gosym reads only the table layouts of its own and earlier versions): the same
//! Go functions at the same addresses, on every binary of the matrix, stripped ones included.
use std::{collections::BTreeSet, path::PathBuf, process::Command};

use goprobe_e2e::{for_each_build, goprobe_bin, matrix};

fn reference_lister() -> PathBuf {
    let programs =
        PathBuf::from(std::env::var("GOPROBE_GO_PROGRAMS").expect("GOPROBE_GO_PROGRAMS"));
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(&programs)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let minor = name.strip_prefix("go1.")?.parse().ok()?;
            let lister = e.path().join("default/gosymref");
            lister.exists().then_some((minor, lister))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("gosymref is built by `cargo xtask build`")
        .1
}

/// From the lowest entry to the highest end the reference lists.
fn reference_text_range(listing: &str) -> std::ops::Range<u64> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let (mut lo, mut hi) = (u64::MAX, 0);
    for line in listing.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let (Some(start), Some(end)) =
            (f.get(1).and_then(|s| hex(s)), f.get(2).and_then(|s| hex(s)))
        {
            lo = lo.min(start);
            hi = hi.max(end);
        }
    }
    lo..hi
}

#[test]
fn symbols_match_debug_gosym() {
    let lister = reference_lister();
    for_each_build(&matrix(), |build| {
        for program in ["count", "shapes", "hello"] {
            let binary = build.program(program);
            let reference = Command::new(&lister).arg(&binary).output().unwrap();
            if !reference.status.success() {
                return Err(format!(
                    "gosymref failed on {binary:?}: {}",
                    String::from_utf8_lossy(&reference.stderr)
                ));
            }
            let want: BTreeSet<(String, u64)> = String::from_utf8_lossy(&reference.stdout)
                .lines()
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    let name = f.next()?.to_string();
                    let entry = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
                    Some((name, entry))
                })
                .collect();
            let ours = Command::new(goprobe_bin())
                .args(["symbols", "--json"])
                .arg(&binary)
                .output()
                .unwrap();
            if !ours.status.success() {
                return Err(format!(
                    "goprobe symbols failed: {}",
                    String::from_utf8_lossy(&ours.stderr)
                ));
            }
            let got: BTreeSet<(String, u64)> = String::from_utf8_lossy(&ours.stdout)
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v.get("kind").is_none())
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_string(),
                        v["addr"].as_u64().unwrap(),
                    )
                })
                .collect();
            if want.len() < 1000 {
                return Err(format!(
                    "the reference lists only {} functions of {binary:?}",
                    want.len()
                ));
            }
            let missing: Vec<_> = want.difference(&got).take(5).collect();
            // cgo builds also hold C functions, which only the symbol table knows; they lie outside
            // Go's text, [runtime.text, runtime.etext).
            let text = reference_text_range(&String::from_utf8_lossy(&reference.stdout));
            let extra: Vec<_> = got
                .difference(&want)
                .filter(|(_, addr)| text.contains(addr))
                .take(5)
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(format!(
                    "{binary:?}: functions differ from debug/gosym; missing e.g. {missing:?}, extra e.g. {extra:?}"
                ));
            }
        }
        Ok(())
    });
}

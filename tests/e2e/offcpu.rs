//! `goprobe offcpu` against `tests/go/offcpu`, read back with `go tool pprof`: two code paths
//! that wait 1 ms and 4 ms on a channel get waiting time in a 1:4 ratio, labelled chan_receive.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use goprobe_e2e::{Build, GoProgram, Goprobe, builds_with_variant, for_each_build};

fn go_tool() -> PathBuf {
    std::env::var("GOPROBE_GO_TOOLCHAINS")
        .ok()
        .and_then(|list| list.split(',').rfind(|s| !s.is_empty()).map(PathBuf::from))
        .expect(
            "GOPROBE_GO_TOOLCHAINS is not set: run the end-to-end tests through `cargo xtask test`",
        )
}

fn pprof(args: &[&str], file: &Path) -> Result<String, String> {
    let out = Command::new(go_tool())
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "go tool pprof {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A duration as pprof prints it (`1.23s`, `450ms`, `12.5us`), in ns.
fn pprof_ns(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "ns" => n,
        "us" => n * 1e3,
        "ms" => n * 1e6,
        "s" => n * 1e9,
        "mins" => n * 60e9,
        "hrs" => n * 3600e9,
        _ => return None,
    })
}

/// The cumulative value of `function` in `go tool pprof -top` output.
fn cum_ns(top: &str, function: &str) -> Option<f64> {
    top.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() == 6 && fields[5] == function)
            .then(|| pprof_ns(fields[3]))
            .flatten()
    })
}

fn waits_in_ratio(build: &Build) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("goprobe-offcpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(format!("{}-{}.pb.gz", build.go, build.variant));
    let mut go = GoProgram::start(&build.program("offcpu"), &["-n", "150"], &[]);
    let pid = go.pid.to_string();
    let probe = Goprobe::start(&["offcpu", "-v", "-p", &pid, "-o", file.to_str().unwrap()]);
    probe
        .stderr
        .wait_for("the banner", Duration::from_secs(30), |l| {
            l.starts_with("Tracing the waits of ")
        })?;
    go.go();
    let truth = go.finish(Duration::from_secs(60))?;
    // With -p, goprobe ends by itself once the process has exited.
    let out = probe.wait(Duration::from_secs(30));
    if !out.status.success() {
        return Err(format!("goprobe failed ({}): {}", out.status, out.stderr));
    }
    let top = pprof(&["-top", "-sample_index=delay"], &file)?;
    let short = cum_ns(&top, "main.goprobeE2EWaitShort")
        .ok_or_else(|| format!("no main.goprobeE2EWaitShort in\n{top}"))?;
    let long = cum_ns(&top, "main.goprobeE2EWaitLong")
        .ok_or_else(|| format!("no main.goprobeE2EWaitLong in\n{top}"))?;
    let ratio = long / short;
    if !(4.0 * 0.85..=4.0 * 1.15).contains(&ratio) {
        return Err(format!(
            "long/short waiting time {ratio:.2}, want 4 ± 15 % (truth {truth}):\n{top}"
        ));
    }
    // Parked time never exceeds what the program measured around each wait (which adds the
    // wake-up), and the wait is labelled as a channel receive.
    for (got, field) in [(short, "short_ns"), (long, "long_ns")] {
        let measured = truth[field].as_f64().unwrap_or(0.0);
        if got > measured * 1.01 {
            return Err(format!(
                "{field}: {got} ns of waiting, the program measured {measured}"
            ));
        }
    }
    let tagged = pprof(
        &[
            "-top",
            "-sample_index=delay",
            "-tagfocus",
            "reason=chan_receive",
        ],
        &file,
    )?;
    if cum_ns(&tagged, "main.goprobeE2EWaitLong").is_none() {
        return Err(format!(
            "the long wait is not labelled chan_receive:\n{tagged}"
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn two_waits_in_ratio_read_back_by_go_tool_pprof() {
    let mut builds = builds_with_variant("default");
    builds.extend(builds_with_variant("stripped"));
    for_each_build(&builds, waits_in_ratio);
}

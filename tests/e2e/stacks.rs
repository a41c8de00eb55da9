//! Stacks of Go calls on the real kernel, for every build in the matrix: `goprobe stackcount`
//! counts calls per calling stack exactly, and `goprobe funclatency --stacks` attributes slow
//! calls to the caller that made them. Ground truth comes from `tests/go/callers`.
use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use goprobe_e2e::{GoProgram, Goprobe, for_each_build, histogram_of, matrix, trace_program};
use serde_json::Value;

const COUNTED: &str = "main.goprobeE2ECounted";

/// Run `goprobe stackcount ARGS -p PID go:main.goprobeE2ECounted` over the count workload.
fn stackcount(program: &std::path::Path, extra: &[&str]) -> Result<(Value, String), String> {
    stackcount_run(program, &["-mode", "count"], extra)
}

/// `goprobe stackcount ARGS -p PID go:main.goprobeE2ECounted` over `program PROGRAM_ARGS`.
fn stackcount_run(
    program: &std::path::Path,
    program_args: &[&str],
    extra: &[&str],
) -> Result<(Value, String), String> {
    let mut go = GoProgram::start(program, program_args, &[]);
    let pid = go.pid.to_string();
    let mut args = vec!["stackcount", "-v", "-p", &pid];
    args.extend_from_slice(extra);
    let pattern = format!("go:{COUNTED}");
    args.push(&pattern);
    let mut probe = Goprobe::start(&args);
    probe.wait_tracing()?;
    go.go();
    let truth = go.finish(Duration::from_secs(60))?;
    let out = probe.wait(Duration::from_secs(30));
    if !out.status.success() {
        return Err(format!("goprobe failed ({}): {}", out.status, out.stderr));
    }
    Ok((truth, out.stdout))
}

/// A function called from three call sites a known number of times each: exactly those three
/// stacks, with exactly those counts; the inlined hop of the third caller is a frame of its own.
#[test]
fn stackcount_counts_each_calling_stack() {
    for_each_build(&matrix(), |build| {
        let (truth, stdout) = stackcount(&build.program("callers"), &["--folded"])?;
        let folded: BTreeMap<String, u64> = stdout
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("Tracing"))
            .map(|l| {
                let (frames, count) = l.rsplit_once(' ').expect("folded line");
                (frames.to_string(), count.parse().expect("count"))
            })
            .collect();
        let callers = truth["callers"].as_object().ok_or("no callers in truth")?;
        if folded.len() != callers.len() {
            return Err(format!(
                "{} stacks, want {}: {folded:#?}",
                folded.len(),
                callers.len()
            ));
        }
        for (caller, want) in callers {
            let want = want.as_u64().unwrap();
            let tail = if caller.ends_with("CallerC") {
                format!("{caller};main.goprobeE2EInlinedHop;{COUNTED}")
            } else {
                format!("{caller};{COUNTED}")
            };
            let (frames, got) = folded
                .iter()
                .find(|(frames, _)| frames.ends_with(&tail))
                .ok_or_else(|| format!("no stack ends with {tail}: {folded:#?}"))?;
            if *got != want {
                return Err(format!("{frames}: {got} calls, want {want}"));
            }
            if frames.contains("[truncated") || !frames.starts_with("runtime.goexit;") {
                return Err(format!(
                    "stack not followed to the goroutine's start: {frames}"
                ));
            }
        }
        Ok(())
    });
}

/// Eight goroutines on every CPU make 400,000 calls from one and the same stack: its counter in
/// the kernel is bumped on several CPUs at once, and not one increment may be lost.
#[test]
fn stackcount_exact_under_contention() {
    let builds: Vec<_> = matrix().into_iter().take(1).collect();
    for_each_build(&builds, |build| {
        let (truth, stdout) = stackcount_run(
            &build.program("callers"),
            &["-mode", "contended", "-g", "8", "-a", "50000"],
            &["--folded"],
        )?;
        let want = truth["calls"].as_u64().ok_or("no calls in truth")?;
        let stacks: Vec<(&str, u64)> = stdout
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("Tracing"))
            .map(|l| {
                let (frames, count) = l.rsplit_once(' ').expect("folded line");
                (frames, count.parse().expect("count"))
            })
            .collect();
        let total: u64 = stacks.iter().map(|s| s.1).sum();
        if stacks.len() != 1 || total != want {
            return Err(format!(
                "{} stacks with {total} calls in all, want one with {want}:\n{stdout}",
                stacks.len()
            ));
        }
        Ok(())
    });
}

fn go_tool() -> Option<PathBuf> {
    std::env::var("GOPROBE_GO_TOOLCHAINS")
        .ok()?
        .split(',')
        .rfind(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// The text layout (file:line, inlined frames marked), and the pprof and SVG outputs.
#[test]
fn stackcount_text_pprof_and_svg() {
    let builds: Vec<_> = matrix().into_iter().take(1).collect();
    for_each_build(&builds, |build| {
        let dir =
            std::env::temp_dir().join(format!("goprobe-e2e-stackcount-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pb, svg) = (dir.join("calls.pb.gz"), dir.join("calls.svg"));
        let (_, stdout) = stackcount(
            &build.program("callers"),
            &[
                "--pprof",
                pb.to_str().unwrap(),
                "--svg",
                svg.to_str().unwrap(),
            ],
        )?;
        for want in [
            "  main.goprobeE2ECounted ",
            "main.goprobeE2EInlinedHop ",
            "(inlined)",
            "callers/main.go:",
            "    3000",
            "Detaching...",
        ] {
            if !stdout.contains(want) {
                return Err(format!("no {want:?} in:\n{stdout}"));
            }
        }
        let svg_text = std::fs::read_to_string(&svg).map_err(|e| e.to_string())?;
        if !svg_text.contains("<svg") || !svg_text.contains("goprobeE2ECallerB") {
            return Err("the SVG has no flame graph of the stacks".into());
        }
        if let Some(go) = go_tool() {
            let top = Command::new(&go)
                .args(["tool", "pprof", "-top"])
                .arg(&pb)
                .env("GOTOOLCHAIN", "local")
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&top.stdout);
            if !top.status.success() || !text.contains("of 6000 total") {
                return Err(format!(
                    "go tool pprof: {}{text}",
                    String::from_utf8_lossy(&top.stderr)
                ));
            }
        }
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    });
}

/// One caller is slow (3 ms calls), one is fast (about a microsecond), both calling the same
/// function: `--stacks --slower-than 2ms` keeps the slow caller's stack with all its calls, and
/// of the fast caller at most the odd call a busy host preempted; without a threshold both
/// callers appear, each with its own latencies.
#[test]
fn stacks_find_the_slow_caller() {
    for_each_build(&matrix(), |build| {
        let (truth, out) = trace_program(
            &build.program("callers"),
            &["-mode", "latency"],
            &[],
            &["--stacks", "--slower-than", "2ms"],
            "go:main.goprobeE2EWork",
        )?;
        let lines = out.json();
        let pid = lines
            .first()
            .and_then(|l| l["pid"].as_u64())
            .ok_or_else(|| format!("no output: {}\nstderr: {}", out.stdout, out.stderr))?
            as u32;
        let h = histogram_of(&lines, "main.goprobeE2EWork", pid)
            .ok_or_else(|| format!("no histogram: {}", out.stdout))?;
        let slow_calls = truth["slow_calls"].as_u64().unwrap();
        let fast_calls = truth["fast_calls"].as_u64().unwrap();
        let slow_ns = truth["slow_ns"].as_u64().unwrap();
        if h["count"].as_u64() != Some(slow_calls + fast_calls) {
            return Err(format!(
                "count {} != {}",
                h["count"],
                slow_calls + fast_calls
            ));
        }
        let stacks = h["stacks"].as_array().ok_or("no stacks")?;
        let caller = |s: &Value| {
            s["frames"][0]["function"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let s = stacks
            .iter()
            .find(|s| caller(s) == "main.goprobeE2ESlowCaller")
            .ok_or_else(|| format!("no stack of the slow caller: {h}"))?;
        if s["count"].as_u64() != Some(slow_calls) || s["p50_ns"].as_u64() < Some(slow_ns) {
            return Err(format!(
                "slow caller: {s}, want {slow_calls} calls of >= {slow_ns} ns"
            ));
        }
        // A fast call that a busy host preempted past the threshold is rightly kept too, but
        // only such outliers, each at least as slow as the threshold.
        for other in stacks
            .iter()
            .filter(|o| caller(o) != "main.goprobeE2ESlowCaller")
        {
            let outliers = other["count"].as_u64().unwrap_or(u64::MAX);
            if outliers > fast_calls / 20 || other["p50_ns"].as_u64() < Some(2_000_000) {
                return Err(format!("a stack of fast calls was kept: {other}"));
            }
        }
        Ok(())
    });
    // Without a threshold, on one build: both callers, told apart by their latencies.
    let builds: Vec<_> = matrix().into_iter().take(1).collect();
    for_each_build(&builds, |build| {
        let (truth, out) = trace_program(
            &build.program("callers"),
            &["-mode", "latency"],
            &[],
            &["--stacks"],
            "go:main.goprobeE2EWork",
        )?;
        let lines = out.json();
        let stacks = lines[0]["stacks"].as_array().ok_or("no stacks")?;
        let by_caller = |name: &str| {
            stacks
                .iter()
                .find(|s| s["frames"][0]["function"] == name)
                .ok_or_else(|| format!("no stack of {name}: {stacks:?}"))
        };
        let slow = by_caller("main.goprobeE2ESlowCaller")?;
        let fast = by_caller("main.goprobeE2EFastCaller")?;
        if fast["count"] != truth["fast_calls"] || slow["count"] != truth["slow_calls"] {
            return Err(format!("counts: slow {slow}, fast {fast}; truth {truth}"));
        }
        if fast["p99_ns"].as_u64() >= slow["p50_ns"].as_u64() {
            return Err(format!(
                "the fast caller is not faster: slow {slow}, fast {fast}"
            ));
        }
        Ok(())
    });
}

/// A function inlined into two callers, whose copies end where an inlined copy of another
/// function (one it calls itself) begins: the stack of each call starts at its caller, at the line
/// of the call, never at a function the traced one calls or at the traced one itself.
#[test]
fn stacks_of_inlined_calls_start_at_the_call() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/go/callers/main.go"))
            .unwrap();
    let line_of = |marker: &str| {
        source
            .lines()
            .position(|l| l.contains(marker))
            .map(|i| i as u64 + 1)
            .unwrap_or_else(|| panic!("no {marker:?} in callers/main.go"))
    };
    let call_line = [
        ("main.goprobeE2ETrimCallerA", line_of("// call A")),
        ("main.goprobeE2ETrimCallerB", line_of("// call B")),
    ];
    for_each_build(&matrix(), |build| {
        let (truth, out) = trace_program(
            &build.program("callers"),
            &["-mode", "inlined", "-a", "3000", "-b", "2000"],
            &[],
            &["--stacks"],
            "go:main.goprobeE2ETrimTag",
        )?;
        let lines = out.json();
        let h = lines
            .iter()
            .find(|l| l["function"] == "main.goprobeE2ETrimTag")
            .ok_or_else(|| format!("no histogram: {}\n{}", out.stdout, out.stderr))?;
        let stacks = h["stacks"].as_array().ok_or("no stacks")?;
        let mut calls: BTreeMap<&str, u64> = BTreeMap::new();
        for stack in stacks {
            let top = &stack["frames"][0];
            let function = top["function"].as_str().unwrap_or("");
            let Some((caller, line)) = call_line.iter().find(|(c, _)| *c == function) else {
                return Err(format!("a stack starts at {top}, not at a caller: {stack}"));
            };
            if top["line"].as_u64() != Some(*line) || top["inlined"] != false {
                return Err(format!("{caller}'s call is at line {line}: {stack}"));
            }
            *calls.entry(caller).or_default() += stack["count"].as_u64().unwrap_or(0);
        }
        for (caller, _) in call_line {
            let want = truth["callers"][caller].as_u64().ok_or("no truth")?;
            if calls.get(caller).copied() != Some(want) {
                return Err(format!(
                    "{caller}: {:?} calls, want {want}: {stacks:#?}",
                    calls.get(caller)
                ));
            }
        }
        Ok(())
    });
}

/// `-b`: processes that start after goprobe and are gone before it ends are still symbolized,
/// PIE ones included (their load address is known from where the probe site was hit).
#[test]
fn stackcount_binary_outlives_its_processes() {
    for_each_build(&goprobe_e2e::builds_with_variant("pie"), |build| {
        let program = build.program("callers");
        let mut probe = Goprobe::start(&[
            "stackcount",
            "--folded",
            "-d",
            "4",
            "-b",
            program.to_str().unwrap(),
            &format!("go:{COUNTED}"),
        ]);
        probe.wait_tracing()?;
        let go = GoProgram::start(&program, &["-mode", "count", "-nowait"], &[]);
        go.finish(Duration::from_secs(60))?;
        let out = probe.wait(Duration::from_secs(30));
        if !out.status.success() {
            return Err(format!("goprobe failed: {}", out.stderr));
        }
        let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        let want = [
            ("main.goprobeE2ECallerA;", 1000),
            ("main.goprobeE2ECallerB;", 2000),
            ("main.goprobeE2EInlinedHop;", 3000),
        ];
        for (caller, count) in want {
            if !lines
                .iter()
                .any(|l| l.contains(caller) && l.ends_with(&format!(" {count}")))
            {
                return Err(format!(
                    "no stack through {caller} with {count} calls:\n{}",
                    out.stdout
                ));
            }
        }
        if lines.len() != 3 || out.stdout.contains("[truncated") {
            return Err(format!("want exactly three whole stacks:\n{}", out.stdout));
        }
        Ok(())
    });
}

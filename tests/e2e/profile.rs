//! `goprobe profile` on the real kernel against `tests/go/cpuhot`, read back with `go tool pprof`:
//! the hot function is on top, its two call paths come out in the program's own ratio, and code
//! inlined into the hot function is a frame of its own, as in Go's own profiles.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use goprobe_e2e::{Build, GoProgram, Goprobe, for_each_build, matrix};
use serde_json::Value;

const HOT: &str = "main.goprobeE2EHot";
const INLINED: &str = "main.goprobeE2EInlinedMix";

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

/// Profile one run of cpuhot; its ground truth and goprobe's stderr.
fn profile(build: &Build, extra: &[&str]) -> Result<(Value, String), String> {
    let mut go = GoProgram::start(&build.program("cpuhot"), &["-ms", "1500"], &[]);
    let pid = go.pid.to_string();
    let mut args = vec!["profile", "-v", "-p", &pid, "-F", "999"];
    args.extend_from_slice(extra);
    let probe = Goprobe::start(&args);
    probe
        .stderr
        .wait_for("the sampling banner", Duration::from_secs(30), |l| {
            l.starts_with("Sampling ")
        })?;
    go.go();
    let truth = go.finish(Duration::from_secs(60))?;
    let out = probe.wait(Duration::from_secs(30));
    if !out.status.success() {
        return Err(format!("goprobe failed ({}): {}", out.status, out.stderr));
    }
    Ok((truth, out.stdout + &out.stderr))
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

#[test]
fn hot_function_on_top_paths_in_ratio_inlined_frames() {
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for_each_build(&matrix(), |build| {
        let file = dir.join(format!("{}-{}.pb.gz", build.go, build.variant));
        let (truth, _) = profile(build, &["-o", file.to_str().unwrap()])?;

        // The hot function is on top of `go tool pprof -top`.
        let top = pprof(&["-top"], &file)?;
        let first = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .ok_or_else(|| format!("no rows in -top:\n{top}"))?;
        if !first.ends_with(HOT) {
            return Err(format!("{HOT} is not on top:\n{top}"));
        }
        // The inlined code is a frame of its own.
        if !top.contains(&format!("{INLINED} (inline)")) {
            return Err(format!("no inlined frame {INLINED}:\n{top}"));
        }

        // Both call paths, in the program's ratio (within 15 %), from -traces.
        let traces = pprof(&["-traces"], &file)?;
        let (mut a, mut b) = (0.0, 0.0);
        for block in traces.split("-----------+-") {
            let Some(value) = block
                .lines()
                .find_map(|l| l.split_whitespace().next().and_then(pprof_ns))
            else {
                continue;
            };
            if !block.contains(HOT) {
                continue;
            }
            if block.contains("main.goprobeE2EPathA") {
                a += value;
            } else if block.contains("main.goprobeE2EPathB") {
                b += value;
            }
        }
        let want = truth["path_a_ns"].as_f64().unwrap() / truth["path_b_ns"].as_f64().unwrap();
        if b == 0.0 {
            return Err(format!("no samples through path B:\n{traces}"));
        }
        let got = a / b;
        eprintln!("    path A/B: profile {got:.2}, program {want:.2}");
        if (got / want - 1.0).abs() > 0.15 {
            return Err(format!(
                "path A/B ratio {got:.2} is not within 15% of the program's {want:.2}"
            ));
        }
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// Folded stacks on stdout and an SVG flame graph, on one build.
#[test]
fn folded_and_svg() {
    let builds: Vec<_> = matrix().into_iter().take(1).collect();
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-profile-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for_each_build(&builds, |build| {
        let svg = dir.join("cpu.svg");
        let (_, out) = profile(build, &["--folded", "--svg", svg.to_str().unwrap()])?;
        let hot = out
            .lines()
            .find(|l| l.contains(&format!("main.goprobeE2EPathA;{HOT}")))
            .ok_or_else(|| format!("no folded stack through path A:\n{out}"))?;
        if !hot.starts_with("runtime.goexit;runtime.main;main.main;") {
            return Err(format!("the stack is not followed to its root: {hot}"));
        }
        let svg_text = std::fs::read_to_string(&svg).map_err(|e| e.to_string())?;
        if !svg_text.contains("<svg") || !svg_text.contains("goprobeE2EHot") {
            return Err("the SVG has no flame graph".into());
        }
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// A program that parks and wakes goroutines all the time spends much of its CPU in the scheduler
/// on the runtime's system stack, and in system calls. Every stack either reaches where goroutines
/// and threads start, or ends in a `[truncated: ...]` frame that says why; none is invented. With
/// --kernel, samples taken in system calls carry their kernel frames.
#[test]
fn stacks_end_at_a_root_or_a_marker() {
    for_each_build(&matrix(), |build| {
        // About a second of calls: the stacks that enter the kernel are a few percent of the
        // samples, and a 200 ms run (about 60 samples) once had none of them.
        let mut go = GoProgram::start(&build.program("sleep"), &["-n", "1000", "-ms", "1"], &[]);
        let pid = go.pid.to_string();
        let probe = Goprobe::start(&["profile", "-p", &pid, "-F", "999", "--kernel", "--folded"]);
        probe
            .stderr
            .wait_for("the sampling banner", Duration::from_secs(30), |l| {
                l.starts_with("Sampling ")
            })?;
        go.go();
        go.finish(Duration::from_secs(60))?;
        let out = probe.wait(Duration::from_secs(30));
        if !out.status.success() {
            return Err(format!("goprobe failed: {}", out.stderr));
        }
        let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        if lines.len() < 5 {
            return Err(format!("too few stacks:\n{}", out.stdout));
        }
        let (mut switches, mut kernel) = (0, 0);
        for line in &lines {
            let (frames, _) = line.rsplit_once(' ').ok_or("bad folded line")?;
            let root = frames.split(';').next().unwrap_or("");
            let ok = ["runtime.goexit", "runtime.mstart", "runtime.rt0_go"].contains(&root)
                || root.starts_with("[truncated: ");
            if !ok {
                return Err(format!(
                    "a stack ends neither at a root nor at a marker: {line}"
                ));
            }
            // A marker only ever ends a stack: nothing follows it on the root side.
            if frames
                .split(';')
                .skip(1)
                .any(|f| f.starts_with("[truncated"))
            {
                return Err(format!("a frame beyond a truncation: {line}"));
            }
            if root == "[truncated: runtime stack switch]" {
                switches += 1;
            }
            if frames.contains("do_syscall_64") {
                kernel += 1;
            }
        }
        if switches == 0 {
            return Err(format!(
                "no stack through a runtime stack switch:\n{}",
                out.stdout
            ));
        }
        if kernel == 0 {
            return Err(format!("no kernel frames with --kernel:\n{}", out.stdout));
        }
        Ok(())
    });
}

/// The agent serves a fresh eBPF CPU profile of any Go process at `/debug/pprof/profile`, and
/// `go tool pprof` fetches it by URL, as from a service's own `net/http/pprof`.
#[test]
fn agent_endpoint_serves_go_tool_pprof() {
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-agent-pprof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = goprobe_e2e::free_port();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[archive]\npath = \"{}\"\n\n\
             [[probe]]\nfunctions = [\"go:main.goprobeE2ENothing\"]\nexe = [\"/nonexistent-goprobe-e2e/*\"]\n",
            dir.join("archive.redb").display()
        ),
    )
    .unwrap();
    let agent = Goprobe::start_agent(&config);
    let build = &matrix()[0];
    let go = GoProgram::start(&build.program("cpuhot"), &["-ms", "4000", "-nowait"], &[]);
    let url = format!(
        "http://127.0.0.1:{port}/debug/pprof/profile?pid={}&seconds=2",
        go.pid
    );
    let out = Command::new(go_tool())
        .args(["tool", "pprof", "-top", &url])
        .env("GOTOOLCHAIN", "local")
        .env("PPROF_TMPDIR", &dir)
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows in -top:\n{top}"));
    assert!(first.ends_with(HOT), "{HOT} is not on top:\n{top}");
    // Errors are JSON with a status, never a hang.
    let (status, body) = goprobe_e2e::http_get(port, "/debug/pprof/profile?seconds=1").unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        goprobe_e2e::http_get(port, "/debug/pprof/profile?pid=2147483646&seconds=1").unwrap();
    assert_eq!(status, 404, "{body}");
    drop(go);
    drop(agent);
    std::fs::remove_dir_all(&dir).ok();
}

/// Each profile holds perf events, BPF maps and memory for its whole length, so the agent serves
/// one at a time per PID and two at once in all (429 beyond), none longer than 60 s (400), and
/// none when it listens beyond localhost without a bearer token (403, and its start-up warning
/// says so).
#[test]
fn agent_profiles_are_limited() {
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-pprof-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let write_config = |name: &str, listen: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[http]\nlisten = \"{listen}\"\n\n[archive]\npath = \"{}\"\n\n\
                 [[probe]]\nfunctions = [\"go:main.goprobeE2ENothing\"]\nexe = [\"/nonexistent-goprobe-e2e/*\"]\n",
                dir.join(format!("{name}.redb")).display()
            ),
        )
        .unwrap();
        path
    };
    let port = goprobe_e2e::free_port();
    let agent = Goprobe::start_agent(&write_config("local.toml", &format!("127.0.0.1:{port}")));
    let build = &matrix()[0];
    // Idle Go programs, waiting for a go-ahead that never comes.
    let programs: Vec<GoProgram> = (0..3)
        .map(|_| GoProgram::start(&build.program("sleep"), &[], &[]))
        .collect();
    let pids: Vec<u32> = programs.iter().map(|p| p.pid).collect();
    let profile = |port: u16, pid: u32, seconds: u32| {
        goprobe_e2e::http_get(
            port,
            &format!("/debug/pprof/profile?pid={pid}&seconds={seconds}"),
        )
        .unwrap()
    };

    let (status, body) = profile(port, pids[0], 61);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("1 to 60"), "{body}");

    let long: Vec<_> = pids[..2]
        .iter()
        .map(|&pid| std::thread::spawn(move || profile(port, pid, 4)))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let (status, body) = profile(port, pids[0], 1);
    assert_eq!(status, 429, "a second profile of the same PID: {body}");
    assert!(body.contains("being profiled already"), "{body}");
    let (status, body) = profile(port, pids[2], 1);
    assert_eq!(status, 429, "a third profile at once: {body}");
    for request in long {
        let (status, body) = request.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // The slots are free again.
    let (status, body) = profile(port, pids[2], 1);
    assert_eq!(status, 200, "{body}");
    drop(agent);

    // Beyond localhost without a token: off, and said so at start-up.
    let port = goprobe_e2e::free_port();
    let open = Goprobe::start_agent(&write_config("open.toml", &format!("0.0.0.0:{port}")));
    let (status, body) = profile(port, pids[0], 1);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("profiling is off"), "{body}");
    assert!(
        open.stderr
            .text()
            .contains("profiling (/debug/pprof/profile) is off"),
        "{}",
        open.stderr.text()
    );
    drop(open);
    drop(programs);
    std::fs::remove_dir_all(&dir).ok();
}

/// Continuous profiling: the agent archives a CPU profile of each traced process per interval;
/// `goprobe query --profile` merges a time range into one pprof profile, `goprobe diff --profile`
/// compares two, and `go tool pprof` opens both.
#[test]
fn agent_archives_profiles_for_query_and_diff() {
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-agent-cont-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("cpuhot");
    std::fs::copy(matrix()[0].program("cpuhot"), &program).unwrap();
    let port = goprobe_e2e::free_port();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nscan_interval = \"100ms\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [archive]\npath = \"{}\"\ninterval = \"1s\"\n\n[profile]\nfrequency = 99\n\n\
             [[probe]]\nfunctions = [\"go:main.goprobeE2EPathB\"]\nexe = [\"{}/*\"]\n",
            dir.join("archive.redb").display(),
            dir.display()
        ),
    )
    .unwrap();
    let agent = Goprobe::start_agent(&config);
    let mut go = GoProgram::start(&program, &["-ms", "2000"], &[]);
    let pid = go.pid;
    agent
        .stderr
        .wait_for("the agent to attach", Duration::from_secs(30), |l| {
            l.contains(&format!("in PID {pid} "))
        })
        .unwrap();
    go.go();
    go.finish(Duration::from_secs(60)).unwrap();
    // The last interval of the process is written at the next archive tick.
    std::thread::sleep(Duration::from_millis(2500));
    let url = format!("http://127.0.0.1:{port}");
    let merged = dir.join("merged.pb.gz");
    let out = goprobe_e2e::run_goprobe(&[
        "query",
        "--url",
        &url,
        "--from",
        "-5m",
        "--pid",
        &pid.to_string(),
        "--profile",
        merged.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let top = pprof(&["-top"], &merged).unwrap();
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows in -top:\n{top}"));
    assert!(first.ends_with(HOT), "{HOT} is not on top:\n{top}");
    assert!(top.contains(&format!("{INLINED} (inline)")), "{top}");
    // Compare the range that holds the run against an earlier, empty one: all of it is new.
    let diff = dir.join("diff.pb.gz");
    let out = goprobe_e2e::run_goprobe(&[
        "diff",
        "--url",
        &url,
        "-10m..-9m",
        "-5m..now",
        "--profile",
        diff.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let top = pprof(&["-top"], &diff).unwrap();
    assert!(top.contains(HOT), "{top}");
    drop(agent);
    std::fs::remove_dir_all(&dir).ok();
}

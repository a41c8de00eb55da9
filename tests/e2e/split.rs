//! `funclatency --split`: each traced call's time split by what its goroutine was doing, checked
//! against a Go program whose calls spend known times in known states (`tests/go/split`).
use std::{collections::HashMap, time::Duration};

use goprobe_e2e::{
    Build, GoProgram, Goprobe, builds_with_variant, for_each_build, free_port, histogram_of,
    http_get, matrix, metric_sum, parse_metrics, poll, trace_program, u64_field,
};
use serde_json::Value;

/// State → (total ns, share).
type States = HashMap<String, (u64, f64)>;

/// The calls' total latency and their split, of the one row of `function`.
fn split_of(lines: &[Value], function: &str) -> Result<(u64, States), String> {
    let pid = lines
        .first()
        .and_then(|l| l["pid"].as_u64())
        .ok_or("goprobe printed no histogram")? as u32;
    let row = histogram_of(lines, function, pid).ok_or("no row for the function")?;
    let states = row["split"]
        .as_array()
        .ok_or_else(|| format!("no split in {row}"))?;
    let map = states
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap_or_default().to_string(),
                (
                    s["total_ns"].as_u64().unwrap_or(0),
                    s["share"].as_f64().unwrap_or(0.0),
                ),
            )
        })
        .collect();
    Ok((u64_field(row, "sum_ns"), map))
}

fn share(split: &States, states: &[&str]) -> f64 {
    states
        .iter()
        .map(|s| split.get(*s).map_or(0.0, |v| v.1))
        .sum()
}

/// Within 10 % of the known share.
fn close(what: &str, got: f64, want: f64) -> Result<(), String> {
    if (got - want).abs() <= 0.10 * want {
        Ok(())
    } else {
        Err(format!("{what}: share {got:.4}, want {want:.4} (±10 %)"))
    }
}

fn default_stripped_and_cgo() -> Vec<Build> {
    let mut builds = builds_with_variant("default");
    builds.extend(builds_with_variant("stripped"));
    builds.extend(builds_with_variant("cgo"));
    with_wait_reasons(builds)
}

/// The builds by Go versions whose wait reasons goprobe knows (goprobe/src/plan/split.rs): with
/// any other, parked time is `parked_other` by design (and goprobe says so at the attach), so
/// the shares by reason cannot be checked. `cargo xtask test --full` builds the others too.
fn with_wait_reasons(builds: Vec<Build>) -> Vec<Build> {
    const KNOWN: [&str; 3] = ["go1.19", "go1.21", "go1.27"];
    builds
        .into_iter()
        .filter(|b| KNOWN.contains(&b.go.as_str()))
        .collect()
}

/// Each call spins 2 ms, waits 3 ms on a channel, sleeps 1 ms and blocks 2 ms in a pipe read
/// (and spends 1 ms in C in cgo builds):
/// running, chan_receive, sleep and syscall each get their share within 10 %, and nothing goes
/// unattributed. The split accounts for the whole latency.
#[test]
fn split_matches_the_known_phases() {
    for_each_build(&default_stripped_and_cgo(), |build| {
        let (truth, out) = trace_program(
            &build.program("split"),
            &["-n", "150"],
            &[],
            &["--split"],
            "go:main.goprobeE2ESplit",
        )?;
        let lines = out.json();
        let (sum_ns, split) = split_of(&lines, "main.goprobeE2ESplit")?;
        let wall = u64_field(&truth, "wall_ns") as f64;
        let phase = |name: &str| u64_field(&truth, name) as f64 / wall;
        // Each phase is timed by the wall clock, and on a busy machine part of it is spent
        // waiting for a CPU or a P: the spinning thread preempted by the kernel, a woken
        // goroutine waiting to run. goprobe puts that time in cpu_wait and runnable, where it
        // belongs; the program cannot tell it apart. So each state is within 10 % of its phase,
        // or, when the machine was busy, no more than 10 % above it and no further below than
        // that waiting time.
        let waiting = share(&split, &["cpu_wait", "runnable", "thread_blocked"]);
        let within = |what: &str, states: &[&str], truth: &str| -> Result<(), String> {
            let got = share(&split, states);
            let want = phase(truth);
            if close(what, got, want).is_ok() || (got <= 1.1 * want && got + waiting >= 0.9 * want)
            {
                Ok(())
            } else {
                Err(format!(
                    "{what}: share {got:.4}, want {want:.4} (±10 %, or less by at most the waiting {waiting:.4}): {split:?}"
                ))
            }
        };
        within("running", &["running"], "spin_ns")?;
        within("chan_receive", &["chan_receive"], "chan_ns")?;
        within("sleep", &["sleep"], "sleep_ns")?;
        within("syscall", &["syscall"], "read_ns")?;
        // cgo builds spend a phase in C, which is cgo time, not a system call.
        if u64_field(&truth, "cgo_ns") > 0 {
            within("cgo", &["cgo"], "cgo_ns")?;
        } else if share(&split, &["cgo"]) > 0.0 {
            return Err(format!("cgo time in a program without cgo: {split:?}"));
        }
        let other = share(&split, &["other"]);
        if other > 0.01 {
            return Err(format!(
                "{:.2} % of the time unattributed: {split:?}",
                other * 100.0
            ));
        }
        let total: u64 = split.values().map(|v| v.0).sum();
        if total.abs_diff(sum_ns) > sum_ns / 1000 {
            return Err(format!(
                "states add up to {total} ns, the calls took {sum_ns} ns"
            ));
        }
        let counters = out.counters();
        if counters["split_transitions"].as_u64().unwrap_or(0) == 0 {
            return Err(format!("no status changes seen: {counters}"));
        }
        Ok(())
    });
}

/// GOMAXPROCS=1 and a goroutine burning the CPU: back from a 1 ms system call, each call waits
/// for the only P until the hog is preempted. That runnable time is shown as such.
#[test]
fn split_shows_runnable_time_behind_a_cpu_hog() {
    for_each_build(
        &with_wait_reasons(builds_with_variant("default")),
        |build| {
            let (truth, out) = trace_program(
                &build.program("split"),
                &["-hog", "-n", "100"],
                &[],
                &["--split"],
                "go:main.goprobeE2ESplitHog",
            )?;
            let lines = out.json();
            let (_, split) = split_of(&lines, "main.goprobeE2ESplitHog")?;
            let runnable = share(&split, &["runnable"]);
            if runnable < 0.15 {
                return Err(format!(
                    "runnable share {runnable:.3}, want a visible one: {split:?}"
                ));
            }
            // The nanosleep phase is the syscall plus the wait for the P after it (and the spin's
            // own preemptions are runnable too): together with running they are the whole call.
            let known = share(&split, &["syscall", "runnable", "running", "cpu_wait"]);
            if known < 0.98 {
                return Err(format!(
                    "only {known:.3} of the time in the expected states: {split:?}"
                ));
            }
            let wall = u64_field(&truth, "wall_ns") as f64;
            let sleep = u64_field(&truth, "sleep_ns") as f64 / wall;
            let syscall = share(&split, &["syscall"]);
            if syscall > sleep * 1.1 {
                return Err(format!(
                    "syscall share {syscall:.3} exceeds the nanosleep phase {sleep:.3}"
                ));
            }
            Ok(())
        },
    );
}

/// The agent with `histogram.split = true` exports each function's time by state as counters
/// that add up to its latency histogram's sum, and archives it: `goprobe diff` says which state
/// the time per call moved to (a second run waits 9 ms on the channel instead of 3). And
/// `/debug/pprof/block?pid=N&seconds=S` serves where any Go process waits, which
/// `go tool pprof` opens by URL.
#[test]
fn agent_exports_the_split_and_serves_block_profiles() {
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-split-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let build = &matrix()[0];
    let program = dir.join("split");
    std::fs::copy(build.program("split"), &program).unwrap();
    let port = free_port();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nscan_interval = \"100ms\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [histogram]\nsplit = true\n\n[archive]\npath = \"{}\"\ninterval = \"1s\"\n\n[profile]\nenabled = false\n\n\
             [[probe]]\nfunctions = [\"go:main.goprobeE2ESplit\"]\nexe = [\"{}/*\"]\n",
            dir.join("archive.redb").display(),
            dir.display()
        ),
    )
    .unwrap();
    let agent = Goprobe::start_agent(&config);
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let run = |args: &[&str]| {
        let mut go = GoProgram::start(&program, args, &[]);
        agent
            .stderr
            .wait_for("the agent to attach", Duration::from_secs(20), |l| {
                l.contains("attached") && l.contains(&format!("in PID {} ", go.pid))
            })
            .unwrap();
        go.go();
        go.finish(Duration::from_secs(60)).unwrap();
    };
    let t0 = now_s();
    run(&["-n", "60"]);
    let function = [("function", "main.goprobeE2ESplit")];
    let text = poll("60 calls in /metrics", Duration::from_secs(15), || {
        let (_, text) = http_get(port, "/metrics").ok()?;
        (metric_sum(&text, "goprobe_function_latency_seconds_count", &function) as u64 == 60)
            .then_some(text)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", agent.stderr.text()));
    let sum = metric_sum(&text, "goprobe_function_latency_seconds_sum", &function);
    let by_state = metric_sum(&text, "goprobe_function_time_seconds_total", &function);
    assert!(
        (by_state - sum).abs() <= sum * 0.001,
        "states add up to {by_state} s, the histogram's sum is {sum} s:\n{text}"
    );
    for state in ["running", "chan_receive", "sleep", "syscall"] {
        let seconds = metric_sum(
            &text,
            "goprobe_function_time_seconds_total",
            &[("function", "main.goprobeE2ESplit"), ("state", state)],
        );
        assert!(seconds > 0.0, "no {state} time:\n{text}");
    }
    assert!(
        parse_metrics(&text).iter().any(|(name, labels, _)| name
            == "goprobe_function_time_seconds_total"
            && labels.iter().any(|(k, v)| k == "state" && v == "other")),
        "{text}"
    );

    // The archive: a second run whose calls wait three times as long on the channel.
    std::thread::sleep(Duration::from_millis(2500));
    let t1 = now_s();
    run(&["-n", "30", "-chan", "9"]);
    std::thread::sleep(Duration::from_millis(2500));
    let t2 = now_s();
    let url = format!("http://127.0.0.1:{port}");
    let diff = goprobe_e2e::run_goprobe(&[
        "diff",
        "--url",
        &url,
        "-f",
        "main.goprobeE2ESplit",
        &format!("@{t0:.3}..@{t1:.3}"),
        &format!("@{t1:.3}..@{t2:.3}"),
    ]);
    assert!(diff.status.success(), "goprobe diff: {}", diff.stderr);
    eprintln!("{}", diff.stdout);
    let moved = diff
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Time per call by state"))
        .nth(1)
        .unwrap_or_else(|| panic!("no states in the diff:\n{}", diff.stdout));
    assert!(
        moved.starts_with("main.goprobeE2ESplit ")
            && moved.contains(": chan_receive ")
            && moved.contains('▲'),
        "chan_receive is not what moved most:\n{}",
        diff.stdout
    );

    // Any Go process, traced or not by the agent's probes.
    let waiter = GoProgram::start(&build.program("offcpu"), &["-n", "1000", "-nowait"], &[]);
    let url = format!(
        "http://127.0.0.1:{port}/debug/pprof/block?pid={}&seconds=2",
        waiter.pid
    );
    let tool = std::env::var("GOPROBE_GO_TOOLCHAINS")
        .ok()
        .and_then(|list| {
            list.split(',')
                .rfind(|s| !s.is_empty())
                .map(std::path::PathBuf::from)
        })
        .expect("GOPROBE_GO_TOOLCHAINS is not set");
    let out = std::process::Command::new(tool)
        .args(["tool", "pprof", "-top", "-sample_index=delay", &url])
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
    assert!(top.contains("main.goprobeE2EWaitLong"), "{top}");
    let (status, body) = http_get(port, "/debug/pprof/block?seconds=1").unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_get(port, "/debug/pprof/block?pid=2147483646&seconds=1").unwrap();
    assert_eq!(status, 404, "{body}");
    drop(waiter);
    let out = agent.signal(libc::SIGTERM);
    assert!(out.status.success(), "agent: {}", out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

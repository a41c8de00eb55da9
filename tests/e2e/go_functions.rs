//! Every kind of Go function, in every build of the matrix: recursion, panics and Goexit,
//! goroutine churn, methods, closures, deferred functions, generics, module-path packages and
//! runtime functions. Ground truth comes from the programs themselves.
use std::time::Duration;

use goprobe_e2e::{Finished, GoProgram, Goprobe, for_each_build, matrix, trace_program, u64_field};
use serde_json::Value;

/// A recursive function of depth D called M times: M·(D+1) calls, each paired with its own
/// return, so the outermost calls (which contain all the others) are the longest.
#[test]
fn recursion_pairs_each_level() {
    for_each_build(&matrix(), |build| {
        let (truth, out) = trace_program(
            &build.program("recursion"),
            &[],
            &[],
            &[],
            "go:main.goprobeE2EDepth",
        )?;
        let h = only_row(&out, "main.goprobeE2EDepth")?;
        let calls = u64_field(&truth, "calls");
        check("count", u64_field(&h, "count") == calls, &h)?;
        let levels = u64_field(&truth, "levels");
        let spin = u64_field(&truth, "spin_ns");
        // Level k from the top spins (levels - k) times in all: the top 1/levels of the calls
        // (p99 lies there) take at least `levels` spins, and the median about half as many.
        let p99 = u64_field(&h, "p99_ns");
        check(
            "outermost calls are the longest (p99 >= levels × spin)",
            p99 >= levels * spin,
            &h,
        )?;
        let p50 = u64_field(&h, "p50_ns");
        let middle = levels.div_ceil(2) * spin;
        check(
            "the median call is a middle level",
            p50 >= middle - spin && p50 <= middle + 2 * spin,
            &h,
        )?;
        check(
            "the innermost calls are the shortest",
            u64_field(&h, "min_ns") < 2 * spin,
            &h,
        )?;
        check(
            "returns_unpaired == 0",
            out.counters()["returns_unpaired"] == 0,
            &h,
        )
    });
}

/// Recursion 10,000 deep on 4 goroutines at once: every level of every call is counted and
/// timed (pairing memory grows with the calls open, not with a fixed depth per goroutine), and
/// none is paired with the wrong return: the shortest call is the innermost level's single spin,
/// the longest contains every level below it.
#[test]
fn deep_recursion_is_timed_at_every_level() {
    let build = &matrix()[0];
    let (truth, out) = trace_program(
        &build.program("recursion"),
        &[
            "-goroutines",
            "4",
            "-n",
            "2",
            "-depth",
            "9999",
            "-spin",
            "2us",
        ],
        &[],
        &[],
        "go:main.goprobeE2EDepth",
    )
    .unwrap();
    let h = only_row(&out, "main.goprobeE2EDepth").unwrap();
    let (calls, levels, spin) = (
        u64_field(&truth, "calls"),
        u64_field(&truth, "levels"),
        u64_field(&truth, "spin_ns"),
    );
    assert_eq!(levels, 10_000);
    assert_eq!(u64_field(&h, "count"), calls, "{h}");
    for field in ["untimed", "unpaired", "lost"] {
        assert_eq!(u64_field(&h, field), 0, "{field}: {h}");
    }
    let counters = out.counters();
    for counter in [
        "entries_dropped",
        "map_full",
        "returns_unpaired",
        "entries_abandoned",
    ] {
        assert_eq!(counters[counter], 0, "{counter}: {counters}");
    }
    assert!(u64_field(&h, "min_ns") >= spin, "{h}");
    assert!(u64_field(&h, "max_ns") >= levels * spin, "{h}");
    assert!(
        out.stderr.contains("goprobe: pairing: 0 open calls"),
        "nothing open at the end: {}",
        out.stderr
    );
}

/// When the goroutine table is full anyway, the count is not silently short: every call that
/// could not be timed is counted as untimed (count + untimed = calls), the text says which
/// capacity was reached and that the unpaired returns are those same calls, and `-v` shows the
/// kernel programs' own log naming the function and process, at most 20 lines a second with
/// the rest counted. Without `-v` there is no kernel log at all.
#[test]
fn a_full_goroutine_table_is_counted_and_logged_by_the_kernel() {
    let build = &matrix()[0];
    for verbose in [true, false] {
        let mut go = GoProgram::start(&build.program("hold"), &["-goroutines", "3000"], &[]);
        let pid = go.pid.to_string();
        let mut args = vec!["funclatency", "-p", &pid, "-r"];
        if verbose {
            args.push("-v");
        }
        args.push(r"go:^main\.goprobeE2EHold$");
        let mut probe = Goprobe::start_with_env(&args, &[("GOPROBE_MAX_GOROUTINES", "500")]);
        probe.wait_tracing().unwrap();
        go.go();
        let truth = go.finish(Duration::from_secs(120)).unwrap();
        let out = probe.wait(Duration::from_secs(30));
        assert!(out.status.success(), "{out:?}");
        let calls = u64_field(&truth, "calls");
        let field = |name: &str| -> u64 {
            let line = out
                .stdout
                .lines()
                .find(|l| l.contains(name))
                .unwrap_or_else(|| panic!("no {name:?} line: {}", out.stdout));
            let after = &line[line.find(name).unwrap() + name.len()..];
            after
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (count, untimed) = (field("count:"), field("untimed ="));
        assert!(untimed >= calls - 500, "{}", out.stdout);
        assert_eq!(count + untimed, calls, "{}", out.stdout);
        assert!(
            out.stdout
                .contains("(pairing capacity reached: 500 goroutines in traced calls"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("returns without a timed entry: the untimed calls above"),
            "{}",
            out.stdout
        );
        let kernel: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("goprobe: kernel: "))
            .collect();
        if !verbose {
            assert!(kernel.is_empty(), "{}", out.stderr);
            continue;
        }
        let full = format!(
            "goprobe: kernel: goroutine table full: a call of function main.goprobeE2EHold (#0) in PID {pid} is not timed"
        );
        let shown = kernel.iter().filter(|l| **l == full).count() as u64;
        let held_back: u64 = kernel
            .iter()
            .filter_map(|l| l.strip_suffix(" more lines not shown"))
            .map(|l| l["goprobe: kernel: ".len()..].parse::<u64>().unwrap())
            .sum();
        assert!(shown >= 1, "{}", out.stderr);
        // The programs log each untimed call (a burst may fill the log's ring buffer: the
        // counters, not the log, are exact); the rate limit shows some and counts the rest.
        assert!(shown + held_back <= untimed, "{}", out.stderr);
        assert!(held_back > 0, "{}", out.stderr);
        assert!(shown <= 20 * 10, "{}", out.stderr);
    }
}

/// 100,000 goroutines inside one traced call at the same time (a server whose backend stalls),
/// each also inside a second traced call nested in the first: every call of both is counted and
/// timed; nothing is evicted, dropped or left unpaired.
#[test]
fn many_goroutines_inside_traced_calls_are_all_timed() {
    let build = &matrix()[0];
    let (truth, out) = trace_program(
        &build.program("hold"),
        &["-goroutines", "100000"],
        &[],
        &["-F", "-r"],
        r"go:^main\.goprobeE2EHold(Inner)?$",
    )
    .unwrap();
    let calls = u64_field(&truth, "calls");
    assert_eq!(calls, 100_000);
    for function in ["main.goprobeE2EHold", "main.goprobeE2EHoldInner"] {
        let h = only_row(&out, function).unwrap();
        assert_eq!(u64_field(&h, "count"), calls, "{h}");
        for field in ["untimed", "unpaired", "lost"] {
            assert_eq!(u64_field(&h, field), 0, "{field}: {h}");
        }
    }
    let counters = out.counters();
    for counter in [
        "entries_dropped",
        "map_full",
        "returns_unpaired",
        "events_lost",
    ] {
        assert_eq!(counters[counter], 0, "{counter}: {counters}");
    }
}

/// Calls that panic (recovered a frame above) or end in runtime.Goexit yield no sample and leave
/// no open entry behind: goprobe's counters show every one of them abandoned, and nothing open,
/// while the program is still running.
#[test]
fn panics_and_goexit_leave_nothing_behind() {
    for_each_build(&matrix(), |build| {
        let mut go = GoProgram::start(&build.program("panics"), &["-linger"], &[]);
        let pid = go.pid.to_string();
        let mut probe = Goprobe::start(&[
            "funclatency",
            "--json",
            "-v",
            "-F",
            "-r",
            "-p",
            &pid,
            r"go:^main\.goprobeE2E(Panicky|Goexit)$",
        ]);
        probe.wait_tracing()?;
        go.go();
        let truth = go.result(Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(300)); // a few drains
        let out = probe.interrupt();
        go.finish(Duration::from_secs(10))?;
        let h = only_row(&out, "main.goprobeE2EPanicky")?;
        check(
            "count == calls that returned",
            u64_field(&h, "count") == u64_field(&truth, "returned"),
            &h,
        )?;
        // Traced, it has its line, but with no call: none of its calls returned.
        if out
            .json()
            .iter()
            .any(|l| l["function"] == "main.goprobeE2EGoexit" && l["count"] != 0)
        {
            return Err(format!(
                "calls ending in Goexit produced samples: {}",
                out.stdout
            ));
        }
        let counters = out.counters();
        let abandoned = counters["entries_abandoned"].as_u64().unwrap();
        let expected = u64_field(&truth, "panicked") + u64_field(&truth, "goexits");
        check(
            "every panicked or Goexit call abandoned exactly once",
            abandoned == expected,
            &counters,
        )?;
        check(
            "no entry left open",
            counters["open_goroutines"] == 0,
            &counters,
        )
    });
}

/// 100,000 short-lived goroutines each call the traced function once and exit: every call is
/// counted, and the per-goroutine map is empty afterwards while the program still runs.
#[test]
fn goroutine_churn_keeps_maps_bounded() {
    let build = &matrix()[0];
    let mut go = GoProgram::start(&build.program("churn"), &["-linger"], &[]);
    let pid = go.pid.to_string();
    let mut probe = Goprobe::start(&[
        "funclatency",
        "--json",
        "-v",
        "-p",
        &pid,
        "go:main.goprobeE2EChurn",
    ]);
    probe.wait_tracing().unwrap();
    go.go();
    let truth = go.result(Duration::from_secs(120)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = probe.interrupt();
    go.finish(Duration::from_secs(10)).unwrap();
    let h = only_row(&out, "main.goprobeE2EChurn").unwrap();
    assert_eq!(u64_field(&h, "count"), u64_field(&truth, "calls"), "{h}");
    let counters = out.counters();
    assert_eq!(counters["open_goroutines"], 0, "{counters}");
    // Exited goroutines leave nothing behind (the probe on runtime.goexit1 removes them).
    assert_eq!(counters["tracked_goroutines"], 0, "{counters}");
    assert_eq!(counters["map_full"], 0, "{counters}");
}

/// Methods on pointer and value receivers, a closure, a deferred function, generic shape
/// instantiations, a module-path package's method and runtime.GC: traced by the names the Go
/// toolchain prints, with exact counts.
#[test]
fn all_shapes_of_functions() {
    let regex = r"go:^(main\.\(\*goprobeE2EThing\)\.Ptr|main\.goprobeE2EThing\.Val|main\.goprobeE2EGeneric\[.*\]|main\.goprobeE2EMakeClosure\.func1|main\.goprobeE2EDeferrer\.func1|github\.com/goprobe-e2e/shapes/v2\.\(\*Counter\)\.Add|runtime\.GC)$";
    for_each_build(&matrix(), |build| {
        let (truth, out) = trace_program(&build.program("shapes"), &[], &[], &["-F", "-r"], regex)?;
        let lines = out.json();
        let count_of = |prefix: &str| -> u64 {
            lines
                .iter()
                .filter(|l| {
                    l["function"]
                        .as_str()
                        .is_some_and(|f| f.starts_with(prefix))
                })
                .map(|l| u64_field(l, "count"))
                .sum()
        };
        let n = u64_field(&truth, "calls");
        for (function, want) in [
            ("main.(*goprobeE2EThing).Ptr", n),
            ("main.goprobeE2EThing.Val", n),
            (
                "main.goprobeE2EGeneric[",
                u64_field(&truth, "generic_calls"),
            ),
            (
                "main.goprobeE2EMakeClosure.func1",
                u64_field(&truth, "closure_calls"),
            ),
            ("main.goprobeE2EDeferrer.func1", n),
            ("github.com/goprobe-e2e/shapes/v2.(*Counter).Add", n),
            ("runtime.GC", u64_field(&truth, "gcs")),
        ] {
            let got = count_of(function);
            if got != want {
                return Err(format!(
                    "{function}: count {got}, want {want}; output: {}",
                    out.stdout
                ));
            }
        }
        Ok(())
    });
}

/// Runtime functions that switch stacks are refused with the reason, and the target runs on.
#[test]
fn unsafe_runtime_functions_are_refused() {
    let build = &matrix()[0];
    let mut go = GoProgram::start(&build.program("count"), &["-n", "1000"], &[]);
    let pid = go.pid.to_string();
    let out = goprobe_e2e::run_goprobe(&["funclatency", "-p", &pid, "go:runtime.morestack"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("runtime.morestack: switches stacks"),
        "{}",
        out.stderr
    );
    go.go();
    go.finish(Duration::from_secs(30)).unwrap();
}

fn only_row(out: &Finished, function: &str) -> Result<Value, String> {
    out.json()
        .into_iter()
        .find(|l| l["function"] == function)
        .ok_or_else(|| {
            format!(
                "no histogram for {function}: {}\n{}",
                out.stdout, out.stderr
            )
        })
}

fn check(what: &str, ok: bool, context: &Value) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: {context}"))
    }
}

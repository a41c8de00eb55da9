//! Bad input gets one clear line on stderr and exit code 2, and the target is never touched.
use std::time::Duration;

use goprobe_e2e::{Finished, GoProgram, goprobe_bin, matrix, run_goprobe};

fn assert_one_line_error(out: &Finished, expect: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code; stderr: {}",
        out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "want exactly one line on stderr, got: {}",
        out.stderr
    );
    assert!(lines[0].starts_with("goprobe: "), "{}", lines[0]);
    for needle in expect {
        assert!(
            lines[0].contains(needle),
            "{:?} not in {:?}",
            needle,
            lines[0]
        );
    }
    assert!(
        !out.stdout.contains("Tracing"),
        "nothing may be traced: {}",
        out.stdout
    );
}

/// A PID that cannot exist (above the kernel's pid_max).
#[test]
fn no_such_pid() {
    let out = run_goprobe(&["funclatency", "-p", "2147483646", "go:main.main"]);
    assert_one_line_error(&out, &["no process with PID 2147483646"]);
}

#[test]
fn not_a_go_binary() {
    let out = run_goprobe(&["funclatency", "-b", "/bin/true", "go:main.main"]);
    assert_one_line_error(&out, &["/bin/true", "not a Go binary"]);
    // Same through a PID: a process running a non-Go binary is left alone.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    let out = run_goprobe(&["funclatency", "-p", &pid, "go:main.main"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_one_line_error(&out, &[&format!("PID {pid}"), "not a Go binary"]);
}

#[test]
fn nothing_matches_suggests_closest_names() {
    let build = &matrix()[0];
    let program = build.program("count");
    let out = run_goprobe(&[
        "funclatency",
        "-b",
        program.to_str().unwrap(),
        "go:main.goprobeE2ECuont",
    ]);
    assert_one_line_error(
        &out,
        &["no function matches", "closest names: main.goprobeE2ECount"],
    );
    // And the target process keeps running untouched.
    let mut go = GoProgram::start(&program, &["-n", "1000"], &[]);
    let pid = go.pid.to_string();
    let out = run_goprobe(&["funclatency", "-p", &pid, "go:main.goprobeE2ECuont"]);
    assert_one_line_error(&out, &["no function matches", "main.goprobeE2ECount"]);
    go.go();
    go.finish(Duration::from_secs(30))
        .expect("the target must run on normally");
}

#[test]
fn bad_pattern() {
    let out = run_goprobe(&["funclatency", "-b", "/bin/true", "main.main"]);
    assert_one_line_error(&out, &["must start with go: or PATH:"]);
    let out = run_goprobe(&["funclatency", "-r", "-b", "/bin/true", "go:("]);
    assert_one_line_error(&out, &["invalid regular expression"]);
}

#[test]
fn not_a_file() {
    let out = run_goprobe(&[
        "funclatency",
        "-b",
        "/nonexistent/goprobe-e2e",
        "go:main.main",
    ]);
    assert_one_line_error(&out, &["cannot read binary /nonexistent/goprobe-e2e"]);
}

/// Without CAP_BPF/CAP_PERFMON (an unprivileged user), loading fails with a clear message.
#[test]
fn not_permitted_to_load_bpf() {
    let build = &matrix()[0];
    let program = build.program("count");
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(setpriv) = setpriv else {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    };
    let goprobe = goprobe_bin();
    // The files must be reachable by `nobody`: copy both to a world-readable place.
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let goprobe_copy = dir.join("goprobe");
    let program_copy = dir.join("count");
    std::fs::copy(&goprobe, &goprobe_copy).unwrap();
    std::fs::copy(&program, &program_copy).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = std::process::Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&goprobe_copy)
        .args([
            "funclatency",
            "-b",
            program_copy.to_str().unwrap(),
            "go:main.goprobeE2ECount",
        ])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let out = Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into(),
        stderr: String::from_utf8_lossy(&output.stderr).into(),
    };
    assert_one_line_error(&out, &["not allowed to load eBPF", "CAP_BPF"]);
}

/// stackcount and profile check their targets the same way, before loading anything.
#[test]
fn stackcount_and_profile_bad_targets() {
    let out = run_goprobe(&["stackcount", "-p", "2147483646", "go:main.main"]);
    assert_one_line_error(&out, &["no process with PID 2147483646"]);
    let out = run_goprobe(&["profile", "-p", "2147483646", "-d", "1"]);
    assert_one_line_error(&out, &["no process with PID 2147483646"]);
    let out = run_goprobe(&["profile", "-b", "/nonexistent/goprobe-test", "-d", "1"]);
    assert_one_line_error(&out, &["cannot read binary /nonexistent/goprobe-test"]);
    let out = run_goprobe(&["profile", "-b", "/bin/true", "-d", "1"]);
    assert_one_line_error(&out, &["/bin/true", "not a Go binary"]);
    let out = run_goprobe(&["stackcount", "-b", "/bin/true", "go:main.main"]);
    assert_one_line_error(&out, &["/bin/true", "not a Go binary"]);
}

/// A wrong function name gets the closest names, as with funclatency.
#[test]
fn stackcount_nothing_matches() {
    let build = &matrix()[0];
    let go = GoProgram::start(&build.program("callers"), &[], &[]);
    let pid = go.pid.to_string();
    let out = run_goprobe(&["stackcount", "-p", &pid, "go:main.goprobeE2ECuonted"]);
    assert_one_line_error(&out, &["closest names", "main.goprobeE2ECounted"]);
}

/// A pattern that matches more than 100 functions or 1,000 probe sites in a binary is refused
/// before anything is attached, with the counts, unless `--force` says so; the same for
/// stackcount. (A `-r` that matches everything in the count program: 4,000+ functions.)
#[test]
fn broad_patterns_need_force() {
    let program = matrix()[0].program("count");
    let path = program.to_str().unwrap();
    for command in ["funclatency", "stackcount"] {
        let out = run_goprobe(&[command, "-b", path, "-r", "go:."]);
        assert_one_line_error(&out, &["functions (", "probe sites) in", "--force"]);
    }
    // Within the limit, nothing is asked.
    let out = run_goprobe(&[
        "funclatency",
        "-d",
        "1",
        "-b",
        path,
        "-r",
        "go:main\\.goprobeE2E",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let out = run_goprobe(&[
        "funclatency",
        "--force",
        "-d",
        "1",
        "-b",
        path,
        "-r",
        "go:.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
}

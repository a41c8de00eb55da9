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

/// Run goprobe and check it fails as bad input must: one line, exit 2, and within a second
/// (each of these hung, panicked or ran for minutes before).
fn assert_fails_at_once(args: &[&str], expect: &[&str]) {
    let start = std::time::Instant::now();
    let out = goprobe_e2e::Goprobe::start(args).wait(Duration::from_secs(10));
    let elapsed = start.elapsed();
    let shown: Vec<String> = args.iter().map(|a| a.chars().take(80).collect()).collect();
    assert_one_line_error(&out, expect);
    assert!(
        elapsed < Duration::from_secs(1),
        "{shown:?} took {elapsed:?}"
    );
}

/// A scratch directory of this test process, removed at the end.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("goprobe-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }

    fn fifo(&self, name: &str) -> String {
        let path = self.path(name);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Times past year 9999 panicked (exit 101), and `@nan` meant 1970.
#[test]
fn times_out_of_range() {
    let none = ["--archive", "/nonexistent/goprobe-e2e.redb"];
    for (from, to, expect) in [
        ("@99999999999999", "now", "out of range"),
        ("-1h", "@1e300", "out of range"),
        ("@nan", "now", "invalid Unix time"),
        ("@-5", "now", "out of range"),
        ("@inf", "now", "invalid Unix time"),
    ] {
        let args = [&["query", "--from", from, "--to", to], &none[..]].concat();
        assert_fails_at_once(&args, &[expect]);
    }
    let args = [&["diff", "@0..@1e300", "-1h..now"], &none[..]].concat();
    assert_fails_at_once(&args, &["BASE_RANGE", "out of range"]);
}

/// A FIFO given as a binary, config or token file blocked goprobe forever in open(2); a device
/// such as /dev/zero was read until memory ran out.
#[test]
fn special_files_are_refused() {
    let scratch = Scratch::new("fifo");
    let fifo = scratch.fifo("fifo");
    for file in [fifo.as_str(), "/dev/zero"] {
        let what = if file == "/dev/zero" {
            "not a regular file (a character device)"
        } else {
            "not a regular file (a FIFO)"
        };
        assert_fails_at_once(&["funclatency", "-b", file, "go:main.main"], &[file, what]);
        assert_fails_at_once(&["stackcount", "-b", file, "go:main.main"], &[file, what]);
        assert_fails_at_once(&["profile", "-b", file, "-d", "1"], &[file, what]);
        assert_fails_at_once(&["symbols", file], &[file, what]);
        assert_fails_at_once(
            &["agent", "--config", file, "--check"],
            &["cannot read config", what],
        );
        assert_fails_at_once(
            &["query", "--token-file", file, "--url", "http://127.0.0.1:9"],
            &["--token-file", what],
        );
        let config = scratch.path("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nbearer_token_file = \"{file}\"\n[[probe]]\nfunctions = [\"go:main.f\"]\n"
            ),
        )
        .unwrap();
        assert_fails_at_once(
            &["agent", "--config", &config, "--check"],
            &["http.bearer_token_file", what],
        );
    }
}

/// `agent --check` accepted a missing, empty or directory token file (the agent refused it
/// only when it started), and absurd durations turned archiving off.
#[test]
fn agent_check_reads_everything() {
    let scratch = Scratch::new("check");
    let config = scratch.path("agent.toml");
    let probe = "[[probe]]\nfunctions = [\"go:main.f\"]\n";
    let empty = scratch.path("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let dir = scratch.0.to_str().unwrap().to_string();
    let missing = scratch.path("no-token");
    for (token, expect) in [
        (&missing, "No such file or directory"),
        (&empty, "is empty"),
        (&dir, "is a directory"),
    ] {
        std::fs::write(
            &config,
            format!("[http]\nbearer_token_file = \"{token}\"\n{probe}"),
        )
        .unwrap();
        assert_fails_at_once(
            &["agent", "--config", &config, "--check"],
            &["http.bearer_token_file", token, expect],
        );
    }
    std::fs::write(
        &config,
        format!("[archive]\ninterval = \"500000000y\"\n{probe}"),
    )
    .unwrap();
    assert_fails_at_once(
        &["agent", "--config", &config, "--check"],
        &["agent.toml:2:12", "too long"],
    );
}

/// `query --url` waited a minute per read on an agent that accepts and never answers.
#[test]
fn silent_agent_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept the connections and hold them, without a word, until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            held.push(stream);
        }
    });
    assert_fails_at_once(
        &["query", "--url", &url, "--timeout", "300ms"],
        &[&url, "no complete answer within 300ms"],
    );
    assert_fails_at_once(
        &[
            "diff",
            "-2h..-1h",
            "-1h..now",
            "--url",
            &url,
            "--timeout",
            "300ms",
        ],
        &["no complete answer within 300ms"],
    );
}

/// A 100,000-character pattern spent minutes computing "closest names".
#[test]
fn huge_pattern_fails_at_once() {
    let build = &matrix()[0];
    let program = build.program("count");
    let program = program.to_str().unwrap();
    let name = "main.goprobeE2E".to_string() + &"x".repeat(100_000);
    let pattern = format!("go:{name}");
    assert_fails_at_once(
        &["funclatency", "-b", program, &pattern],
        &["no function matches"],
    );
    assert_fails_at_once(&["symbols", program, &name], &["matches"]);
    // The message quotes the start of the pattern and its length, not 100,000 characters.
    let out = run_goprobe(&["funclatency", "-b", program, &pattern]);
    assert!(out.stderr.len() < 1000, "{}", out.stderr);
    assert!(out.stderr.contains("(100015 characters)"), "{}", out.stderr);
}

/// `profile -o /nonexistent/x` failed only after the sampling.
#[test]
fn profile_output_checked_first() {
    let build = &matrix()[0];
    let go = GoProgram::start(&build.program("count"), &["-n", "1000"], &[]);
    let pid = go.pid.to_string();
    assert_fails_at_once(
        &["profile", "-p", &pid, "-d", "5", "-o", "/nonexistent/x"],
        &["cannot write /nonexistent/x"],
    );
    assert_fails_at_once(
        &[
            "profile",
            "-p",
            &pid,
            "-d",
            "5",
            "--svg",
            "/nonexistent/x.svg",
        ],
        &["cannot write /nonexistent/x.svg"],
    );
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

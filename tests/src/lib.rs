//! Harness for goprobe's end-to-end tests: the real `goprobe` binary, the real kernel, and real
//! Go programs built from `tests/go` by several Go versions (see `cargo xtask build`).
//!
//! Environment (set by `cargo xtask test`):
//! - `GOPROBE_BIN`: the goprobe binary;
//! - `GOPROBE_GO_PROGRAMS`: `<dir>/<goversion>/<variant>/<program>`;
//! - `GOPROBE_GO_MATRIX`: comma-separated `goversion/variant` builds to test.
//!
//! Tests panic with a message (never return errors), and tests of one behaviour loop over the
//! build matrix, reporting every build that fails.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => panic!("{name} is not set: run the end-to-end tests through `cargo xtask test`"),
    }
}

pub fn goprobe_bin() -> PathBuf {
    env_path("GOPROBE_BIN")
}

/// One build of the test programs: a Go version and a build variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub go: String,
    pub variant: String,
}

impl std::fmt::Display for Build {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.go, self.variant)
    }
}

impl Build {
    pub fn program(&self, name: &str) -> PathBuf {
        let path = env_path("GOPROBE_GO_PROGRAMS")
            .join(&self.go)
            .join(&self.variant)
            .join(name);
        assert!(
            path.exists(),
            "{} is missing: `cargo xtask build` builds it",
            path.display()
        );
        path
    }
}

/// The builds to test, from `GOPROBE_GO_MATRIX`.
pub fn matrix() -> Vec<Build> {
    let spec = std::env::var("GOPROBE_GO_MATRIX").unwrap_or_else(|_| {
        panic!("GOPROBE_GO_MATRIX is not set: run the end-to-end tests through `cargo xtask test`")
    });
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (go, variant) = s
                .split_once('/')
                .unwrap_or_else(|| panic!("bad matrix entry {s:?}"));
            Build {
                go: go.into(),
                variant: variant.into(),
            }
        })
        .collect()
}

/// Builds of one variant, or all when none has it.
pub fn builds_with_variant(variant: &str) -> Vec<Build> {
    matrix()
        .into_iter()
        .filter(|b| b.variant == variant)
        .collect()
}

/// Run `check` for every build; panic at the end listing every failure.
pub fn for_each_build(builds: &[Build], mut check: impl FnMut(&Build) -> Result<(), String>) {
    assert!(!builds.is_empty(), "no builds to test");
    let mut failures = Vec::new();
    for build in builds {
        eprintln!("--- {build}");
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(build)));
        match result {
            Ok(Ok(())) => eprintln!("    ok ({:.1}s)", started.elapsed().as_secs_f64()),
            Ok(Err(e)) => {
                eprintln!("    FAILED: {e}");
                failures.push(format!("{build}: {e}"));
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("    PANICKED: {msg}");
                failures.push(format!("{build}: panicked: {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} builds failed:\n{}",
        failures.len(),
        builds.len(),
        failures.join("\n")
    );
}

/// Lines a child wrote, collected by a reader thread so that the child never blocks on a pipe.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn collect(reader: impl std::io::Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    /// Wait until a line satisfies `pred`; return it.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.snapshot().into_iter().find(|l| pred(l)) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; got:\n{}",
                    self.text()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A Go test program following the tests/go harness protocol: `ready <pid>`, wait for a line on
/// stdin, run, print one JSON line of ground truth, exit 0.
pub struct GoProgram {
    child: Child,
    stdin: Option<ChildStdin>,
    pub pid: u32,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl GoProgram {
    pub fn start(path: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(path)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdin = child.stdin.take();
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let program = Self {
            pid: child.id(),
            child,
            stdin,
            stdout,
            stderr,
        };
        let ready = program
            .stdout
            .wait_for("the program's ready line", Duration::from_secs(20), |l| {
                l.starts_with("ready ")
            })
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(ready, format!("ready {}", program.pid));
        program
    }

    /// Write one line to the program's stdin and keep it open (for programs that wait for
    /// more than the go-ahead, like `agentload` between phases).
    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Let the workload run (stdin stays open: a `-linger` program waits for it to close).
    pub fn go(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }

    /// Wait for the ground-truth line while the program may still be running (`-linger`).
    pub fn result(&self, timeout: Duration) -> Result<Value, String> {
        let line = self
            .stdout
            .wait_for("the ground-truth line", timeout, |l| l.starts_with('{'))?;
        serde_json::from_str(&line).map_err(|e| format!("bad ground truth {line:?}: {e}"))
    }

    /// Wait for the program to finish (closing its stdin); its ground truth, or an error if it
    /// failed its own checks.
    pub fn finish(mut self, timeout: Duration) -> Result<Value, String> {
        self.go();
        self.stdin = None;
        let status = wait_timeout(&mut self.child, timeout)
            .ok_or_else(|| format!("the Go program did not finish within {timeout:?}"))?;
        thread::sleep(Duration::from_millis(50)); // let the reader threads catch the last lines
        if !status.success() {
            return Err(format!(
                "the Go program failed ({status}): {}",
                self.stderr.text()
            ));
        }
        self.result(Duration::from_secs(5))
    }
}

impl Drop for GoProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `goprobe`.
pub struct Goprobe {
    child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

/// What a finished goprobe left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The JSON lines on stdout.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// goprobe's own counters (printed on stderr with -v).
    pub fn counters(&self) -> Value {
        let line = self
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("goprobe: counters "))
            .unwrap_or_else(|| panic!("no counters line (run with -v): {}", self.stderr));
        serde_json::from_str(line).unwrap()
    }
}

impl Goprobe {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(goprobe_bin());
        command.args(args).envs(envs.iter().copied());
        Self::spawn(command)
    }

    /// Run `command`, which runs goprobe in the end (e.g. through `unshare` or a shell that
    /// execs it), collecting its output.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start goprobe");
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// `goprobe agent --config CONFIG`, once it says it is running (panics with its output if it
    /// exits or does not start within a minute).
    pub fn start_agent(config: &Path) -> Self {
        let agent = Self::start(&["agent", "--config", config.to_str().unwrap()]);
        if let Err(e) =
            agent
                .stderr
                .wait_for("the agent's start line", Duration::from_secs(60), |l| {
                    l.starts_with("goprobe: agent running")
                })
        {
            let out = agent.wait(Duration::from_secs(5));
            panic!("{e}\nthe agent exited: {out:?}");
        }
        agent
    }

    /// Wait for the "Tracing N functions" banner (stdout, or stderr with --json); the probes are
    /// attached once it is printed.
    pub fn wait_tracing(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for lines in [&self.stdout, &self.stderr] {
                if let Some(l) = lines
                    .snapshot()
                    .into_iter()
                    .find(|l| l.starts_with("Tracing "))
                {
                    return Ok(l);
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "goprobe exited ({status}) before tracing: {}",
                    self.stderr.text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "goprobe did not start tracing: {}",
                    self.stderr.text()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGINT (Ctrl-C) and wait for goprobe to print and exit.
    pub fn interrupt(self) -> Finished {
        self.signal(libc::SIGINT)
    }

    pub fn signal(self, signal: i32) -> Finished {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(mut self, timeout: Duration) -> Finished {
        let status = wait_timeout(&mut self.child, timeout).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "goprobe did not exit within {timeout:?}; stderr: {}",
                self.stderr.text()
            )
        });
        thread::sleep(Duration::from_millis(100));
        Finished {
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }
}

impl Drop for Goprobe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run goprobe to completion (for quick commands and error cases).
pub fn run_goprobe(args: &[&str]) -> Finished {
    Goprobe::start(args).wait(Duration::from_secs(60))
}

/// The child's exit status once it exits, or `None` if it is still running after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON object of `function` in `pid`, merged over intervals (there is one without -i).
pub fn histogram_of<'a>(lines: &'a [Value], function: &str, pid: u32) -> Option<&'a Value> {
    lines
        .iter()
        .find(|v| v["function"] == function && v["pid"] == pid)
}

pub fn u64_field(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {field} in {v}"))
}

/// Trace one Go program from start to finish with `goprobe funclatency --json -p PID`, and return
/// the program's ground truth with goprobe's output.
pub fn trace_program(
    program: &Path,
    program_args: &[&str],
    envs: &[(&str, &str)],
    goprobe_args: &[&str],
    pattern: &str,
) -> Result<(Value, Finished), String> {
    let mut go = GoProgram::start(program, program_args, envs);
    let pid = go.pid.to_string();
    let mut args = vec!["funclatency", "--json", "-v", "-p", &pid];
    args.extend_from_slice(goprobe_args);
    args.push(pattern);
    let mut probe = Goprobe::start(&args);
    probe.wait_tracing()?;
    go.go();
    let truth = go.finish(Duration::from_secs(120))?;
    // With -p, goprobe ends by itself once the traced process has exited.
    let finished = probe.wait(Duration::from_secs(30));
    if !finished.status.success() {
        return Err(format!(
            "goprobe failed ({}): {}",
            finished.status, finished.stderr
        ));
    }
    Ok((truth, finished))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// GET `http://127.0.0.1:PORT/PATH_AND_QUERY` with HTTP/1.0 (no chunking); returns the status
/// and the body, or an error if nothing answered.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    http_request(port, "GET", path, &[])
}

/// An HTTP/1.0 request with `method` and extra `headers` to 127.0.0.1:PORT.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Result<(u16, String), String> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP answer: {text}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head}"))?;
    Ok((status, body.to_string()))
}

/// Percent-encode a query parameter value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Wait until `check` returns Some, polling every 100 ms.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One sample of a Prometheus text exposition: metric name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// A Prometheus text exposition, parsed.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, "nan"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels = Vec::new();
                let mut rest = rest.trim_end_matches('}');
                while let Some((key, after)) = rest.split_once("=\"") {
                    // Values in these tests hold no escaped quotes.
                    let (value, after) = after.split_once('"').unwrap_or((after, ""));
                    labels.push((key.trim_start_matches(',').to_string(), value.to_string()));
                    rest = after;
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        samples.push((name, labels, value));
    }
    samples
}

/// Sum of the samples of `name` whose labels include all of `with`.
pub fn metric_sum(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

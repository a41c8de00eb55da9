//! `goprobe agent` on the real kernel with real Go programs (tests/go/agentload), scraped by a
//! real Prometheus server, with its archive read back by `goprobe query` and `goprobe diff`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use goprobe_e2e::{
    Finished, GoProgram, Goprobe, free_port, http_get, http_request, matrix, metric_sum, poll,
    run_goprobe, u64_field, url_encode,
};
use serde_json::Value;

const FUNCTION: &str = "main.goprobeE2EAgent";
const COUNT: &str = "goprobe_function_latency_seconds_count";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("goprobe-e2e-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A copy of the agentload program in this directory, under `name`.
    fn program(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::copy(matrix()[0].program("agentload"), &path).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A config that traces the agentload function in the programs of `dir` only. The test programs
/// call it in tight loops, which the overhead budget would detach: it is off here, and on in the
/// test of the budget.
fn config(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        r#"[agent]
scan_interval = "100ms"
overhead_budget = "0"

[http]
listen = "127.0.0.1:{port}"

[archive]
path = "{archive}"
interval = "1s"

[[probe]]
name = "agentload"
functions = ["go:{FUNCTION}"]
exe = ["{dir}/*"]
{extra}"#,
        archive = dir.join("archive.redb").display(),
        dir = dir.display(),
    )
}

struct Agent {
    probe: Goprobe,
    port: u16,
}

impl Agent {
    fn start(config_path: &Path, port: u16) -> Agent {
        Agent {
            probe: Goprobe::start_agent(config_path),
            port,
        }
    }

    fn wait_attached(&self, pid: u32) {
        self.probe
            .stderr
            .wait_for(
                &format!("the agent to attach to PID {pid}"),
                Duration::from_secs(20),
                |l| l.contains("attached") && l.contains(&format!("in PID {pid} ")),
            )
            .unwrap();
    }

    fn metrics(&self) -> String {
        let (status, body) = http_get(self.port, "/metrics").unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Wait until /metrics counts `calls` calls of the traced function.
    fn wait_count(&self, calls: u64) -> String {
        self.wait_count_of(FUNCTION, calls)
    }

    /// Wait until /metrics counts `calls` calls of `function`.
    fn wait_count_of(&self, function: &str, calls: u64) -> String {
        poll(
            &format!("/metrics to count {calls} calls of {function}"),
            Duration::from_secs(15),
            || {
                let text = self.metrics();
                (metric_sum(&text, COUNT, &[("function", function)]) as u64 == calls)
                    .then_some(text)
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}; last /metrics:\n{}\nagent stderr:\n{}",
                self.metrics(),
                self.probe.stderr.text()
            )
        })
    }

    fn stop(self) -> Finished {
        let out = self.probe.signal(libc::SIGTERM);
        assert!(out.status.success(), "agent: {}", out.stderr);
        out
    }
}

/// Runs the agentload program at `path`: start, wait until the agent attached, go.
fn start_program(agent: &Agent, path: &Path, args: &[&str]) -> GoProgram {
    let mut program = GoProgram::start(path, args, &[]);
    agent.wait_attached(program.pid);
    program.go();
    program
}

/// Calls that began before the agent attached are counted in /metrics as not timed, exactly:
/// 500 goroutines are inside two nested traced calls when the agent attaches, then return.
#[test]
fn calls_not_timed_are_in_metrics() {
    let scratch = Scratch::new("not-timed");
    let program = scratch.0.join("hold");
    fs::copy(matrix()[0].program("hold"), &program).unwrap();
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let config = config(&scratch.0, port, "").replace(
        &format!("functions = [\"go:{FUNCTION}\"]"),
        r#"functions = ["go:main.goprobeE2EHold", "go:main.goprobeE2EHoldInner"]"#,
    );
    fs::write(&config_path, config).unwrap();
    let agent = Agent::start(&config_path, port);
    let mut go = GoProgram::start(&program, &["-before", "-goroutines", "500"], &[]);
    agent.wait_attached(go.pid);
    go.go();
    go.finish(Duration::from_secs(60)).unwrap();
    let not_timed = |reason: &str| {
        metric_sum(
            &agent.metrics(),
            "goprobe_agent_calls_not_timed_total",
            &[("reason", reason)],
        ) as u64
    };
    poll("1000 unpaired returns", Duration::from_secs(10), || {
        (not_timed("unpaired") == 1000).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", agent.metrics()));
    assert_eq!(not_timed("untimed"), 0);
    assert_eq!(not_timed("lost"), 0);
    agent.stop();
}

/// The agent is started first; then two copies of the program start, one exits and another
/// starts, and one more arrives through a shell that execs it. /metrics counts, summed, equal
/// the calls all of them made; the binary (one build, two files) was inspected once; every
/// process is detached when it exits. SIGHUP reloads the config without losing counts, and a
/// broken config on reload is refused while the agent keeps running.
#[test]
fn discovery_counts_every_process() {
    let scratch = Scratch::new("agent-discovery");
    let (a, b) = (
        scratch.program("agentload"),
        scratch.program("agentload-copy"),
    );
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    fs::write(&config_path, config(&scratch.0, port, "")).unwrap();
    let agent = Agent::start(&config_path, port);

    let args = ["-n", "50", "-g", "4", "-phases", "1"];
    let first = start_program(&agent, &a, &args);
    let second = start_program(&agent, &b, &args);
    let first_pid = first.pid;
    let mut total = u64_field(&first.finish(Duration::from_secs(60)).unwrap(), "calls");
    agent
        .probe
        .stderr
        .wait_for("the first program's detach", Duration::from_secs(10), |l| {
            l.contains(&format!("detached from PID {first_pid}: exited"))
        })
        .unwrap();
    let third = start_program(&agent, &a, &args);
    total += u64_field(&second.finish(Duration::from_secs(60)).unwrap(), "calls");
    total += u64_field(&third.finish(Duration::from_secs(60)).unwrap(), "calls");

    // A shell first (not traced: not in the probe's directory), which then execs the program.
    let script = format!("sleep 0.5; exec {} {}", a.display(), args.join(" "));
    let mut execd = GoProgram::start(Path::new("/bin/sh"), &["-c", &script], &[]);
    agent.wait_attached(execd.pid);
    execd.go();
    total += u64_field(&execd.finish(Duration::from_secs(60)).unwrap(), "calls");
    assert_eq!(total, 4 * 200);

    let text = agent.wait_count(total);
    // Both files are one build: inspected once. No PID label by default.
    assert_eq!(
        metric_sum(&text, "goprobe_agent_binaries_inspected_total", &[]),
        1.0,
        "{text}"
    );
    assert!(!text.contains("pid=\""), "{text}");
    for service in ["agentload", "agentload-copy"] {
        assert!(
            metric_sum(&text, COUNT, &[("service", service)]) > 0.0,
            "no series for service {service}: {text}"
        );
    }
    poll("every process detached", Duration::from_secs(10), || {
        (metric_sum(&agent.metrics(), "goprobe_agent_processes_traced", &[]) == 0.0).then_some(())
    })
    .unwrap();
    assert_eq!(
        metric_sum(&text, "goprobe_agent_attach_errors_total", &[]),
        0.0
    );

    // A broken config on SIGHUP: refused, with its location; the agent runs on.
    fs::write(&config_path, "[archive]\ninterval = \"soon\"\n").unwrap();
    unsafe { libc::kill(agent.probe.pid() as i32, libc::SIGHUP) };
    agent
        .probe
        .stderr
        .wait_for("the refused reload", Duration::from_secs(10), |l| {
            l.contains("config reload refused") && l.contains("agent.toml:2:")
        })
        .unwrap();
    // A good one: applied, and the counts collected so far stay.
    fs::write(
        &config_path,
        config(&scratch.0, port, "service = \"renamed\""),
    )
    .unwrap();
    unsafe { libc::kill(agent.probe.pid() as i32, libc::SIGHUP) };
    agent
        .probe
        .stderr
        .wait_for("the reload", Duration::from_secs(10), |l| {
            l.contains("config reloaded")
        })
        .unwrap();
    let text = agent.metrics();
    assert_eq!(
        metric_sum(&text, COUNT, &[("function", FUNCTION)]) as u64,
        total
    );
    assert_eq!(
        metric_sum(&text, "goprobe_agent_config_reloads_total", &[]),
        1.0
    );
    let renamed = start_program(&agent, &a, &args);
    total += u64_field(&renamed.finish(Duration::from_secs(60)).unwrap(), "calls");
    let text = agent.wait_count(total);
    assert_eq!(
        metric_sum(&text, COUNT, &[("service", "renamed")]),
        200.0,
        "{text}"
    );
    agent.stop();
}

/// A Prometheus server from Debian's package scrapes the agent; PromQL over its HTTP API
/// agrees with the program's own count, and `histogram_quantile` with its sleep duration.
#[test]
fn prometheus_agrees() {
    let scratch = Scratch::new("agent-prometheus");
    let program = scratch.program("agentload");
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    fs::write(&config_path, config(&scratch.0, port, "")).unwrap();
    let agent = Agent::start(&config_path, port);
    let prometheus = PrometheusServer::start(&scratch.0, port);

    // 3 ms sleeps: with the default power-of-two buckets, all land in (2.048 ms, 4.096 ms].
    let run = start_program(&agent, &program, &["-n", "75", "-g", "4", "-phases", "3"]);
    let calls = u64_field(&run.finish(Duration::from_secs(60)).unwrap(), "calls");
    agent.wait_count(calls);

    let selector = format!("{{function=\"{FUNCTION}\"}}");
    let count = poll(
        "Prometheus to scrape the final count",
        Duration::from_secs(30),
        || {
            let v = prometheus.query(&format!(
                "sum(goprobe_function_latency_seconds_count{selector})"
            ))?;
            (v as u64 == calls).then_some(v)
        },
    )
    .unwrap_or_else(|e| panic!("{e}; Prometheus log:\n{}", prometheus.log()));
    assert_eq!(count as u64, calls);
    let p50 = prometheus
        .query(&format!(
            "histogram_quantile(0.5, sum by (le) (goprobe_function_latency_seconds_bucket{selector}))"
        ))
        .unwrap();
    assert!(
        (0.002048..=0.004096).contains(&p50),
        "PromQL p50 {p50} s is not in the bucket of a 3 ms sleep"
    );
    let sum = prometheus
        .query(&format!(
            "sum(goprobe_function_latency_seconds_sum{selector})"
        ))
        .unwrap();
    let avg = sum / calls as f64;
    assert!(
        (0.003..0.006).contains(&avg),
        "average {avg} s for 3 ms sleeps"
    );
    let up = prometheus.query("up{job=\"goprobe\"}").unwrap();
    assert_eq!(up, 1.0);
    agent.stop();
}

/// The program runs fast (1 ms sleeps), the agent is killed with SIGKILL and started again,
/// and the program runs slow (5 ms). The archive kept the fast phase; `goprobe diff` shows the
/// p50 move from ~1 ms to ~5 ms, through the agent's HTTP API and from the archive file.
#[test]
fn diff_finds_the_change_across_sigkill() {
    let scratch = Scratch::new("agent-diff");
    let program = scratch.program("agentload");
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    fs::write(&config_path, config(&scratch.0, port, "")).unwrap();
    let archive = scratch.0.join("archive.redb");

    let first = Agent::start(&config_path, port);
    let mut run = GoProgram::start(&program, &["-n", "100", "-g", "4", "-phases", "1,5"], &[]);
    first.wait_attached(run.pid);
    let started = format!("@{:.3}", now_s());
    run.send("go");
    run.stdout
        .wait_for("the fast phase", Duration::from_secs(30), |l| {
            l.starts_with("phase 1 done")
        })
        .unwrap();
    first.wait_count(400);
    // Once the interval that holds the fast phase is committed, kill -9: it must survive.
    wait_archived(port, &format!("{started}.."), 400);
    let killed = first.probe.signal(libc::SIGKILL);
    assert!(!killed.status.success());

    let second = Agent::start(&config_path, port);
    assert_eq!(archived(port, &format!("{started}..")), Some(400));
    second.wait_attached(run.pid);
    run.send("next");
    let truth = run.finish(Duration::from_secs(60)).unwrap();
    let phases = truth["phases"].as_array().unwrap().clone();
    second.wait_count(phases[1]["calls"].as_u64().unwrap());

    // The phases as ranges: the fast one until the slow one began, the slow one until now.
    let slow_start = u64_field(&phases[1], "start_ms") as f64 / 1000.0;
    let base = format!("{started}..@{:.3}", slow_start - 0.001);
    let compare = format!("@{slow_start:.3}..");
    wait_archived(port, &compare, 400);
    let url = format!("http://127.0.0.1:{port}");
    let live = run_goprobe(&["diff", "--url", &url, "--json", &base, &compare]);
    assert!(live.status.success(), "{}", live.stderr);
    check_diff(&serde_json::from_str(&live.stdout).unwrap(), &phases);

    // The same through the HTTP API directly.
    let (status, body) = http_get(
        port,
        &format!(
            "/api/v1/query?from={}&to={}&function={}",
            url_encode(base.split("..").next().unwrap()),
            url_encode(base.split("..").nth(1).unwrap()),
            url_encode("main.goprobeE2E*")
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        u64_field(&answer["histograms"][0], "count"),
        400,
        "{answer}"
    );
    second.stop();

    // The agent is gone: read the archive file.
    let archive = archive.to_str().unwrap();
    let text = run_goprobe(&["diff", "--archive", archive, &base, &compare]);
    assert!(text.status.success(), "{}", text.stderr);
    let row = text
        .stdout
        .lines()
        .find(|l| l.starts_with(FUNCTION))
        .unwrap_or_else(|| panic!("no row for {FUNCTION}:\n{}", text.stdout));
    assert!(row.contains("400 → 400"), "{}", text.stdout);
    assert!(row.contains('▲'), "{}", text.stdout);
    let json = run_goprobe(&["diff", "--archive", archive, "--json", &base, &compare]);
    check_diff(&serde_json::from_str(&json.stdout).unwrap(), &phases);
    let query = run_goprobe(&[
        "query",
        "--archive",
        archive,
        "--from",
        base.split("..").next().unwrap(),
        "--to",
        base.split("..").nth(1).unwrap(),
        "-u",
    ]);
    assert!(query.status.success(), "{}", query.stderr);
    assert!(
        query
            .stdout
            .contains(&format!("Function = {FUNCTION} [agentload]")),
        "{}",
        query.stdout
    );
    assert!(query.stdout.contains("count: 400"), "{}", query.stdout);
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Calls the agent's archive holds for the range `FROM..TO` (an open end is now).
fn archived(port: u16, range: &str) -> Option<u64> {
    let (from, to) = range.split_once("..").unwrap();
    let to = if to.is_empty() { "now" } else { to };
    let (status, body) = http_get(
        port,
        &format!(
            "/api/v1/query?from={}&to={}",
            url_encode(from),
            url_encode(to)
        ),
    )
    .ok()?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    Some(
        answer["histograms"]
            .as_array()?
            .iter()
            .filter(|h| h["function"] == FUNCTION)
            .map(|h| u64_field(h, "count"))
            .sum(),
    )
}

fn wait_archived(port: u16, range: &str, calls: u64) {
    poll(
        &format!("the archive to hold {calls} calls in {range}"),
        Duration::from_secs(15),
        || (archived(port, range) == Some(calls)).then_some(()),
    )
    .unwrap();
}

fn check_diff(diff: &Value, phases: &[Value]) {
    let row = diff["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == FUNCTION)
        .unwrap_or_else(|| panic!("no {FUNCTION} in {diff}"));
    let (base, compare) = (&row["base"], &row["compare"]);
    assert_eq!(
        u64_field(base, "count"),
        u64_field(&phases[0], "calls"),
        "{diff}"
    );
    assert_eq!(
        u64_field(compare, "count"),
        u64_field(&phases[1], "calls"),
        "{diff}"
    );
    let (p50a, p50b) = (u64_field(base, "p50_ns"), u64_field(compare, "p50_ns"));
    assert!(
        (1_000_000..2_500_000).contains(&p50a),
        "base p50 {p50a} ns for 1 ms sleeps: {diff}"
    );
    assert!(
        (5_000_000..7_500_000).contains(&p50b),
        "compare p50 {p50b} ns for 5 ms sleeps: {diff}"
    );
}

/// A config error is reported with its file:line:column on one line, exit code 2, and the
/// agent does not start; `--check` accepts a valid file.
#[test]
fn config_errors_stop_the_start() {
    let scratch = Scratch::new("agent-config");
    let path = scratch.0.join("agent.toml");
    fs::write(
        &path,
        "[[probe]]\nfunctions = [\"go:main.x\"]\n\n[archive]\ninterval = \"10x\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = run_goprobe(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with(&format!("goprobe: {}:5:12: ", path.display())),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("invalid duration \"10x\""),
        "{}",
        lines[0]
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    fs::write(&path, "[[probe]]\nfunctions = [\"fmt.Println\"]\n").unwrap();
    let out = run_goprobe(&["agent", "--check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("agent.toml:2:"), "{}", out.stderr);
    assert!(out.stderr.contains("must start with go:"), "{}", out.stderr);

    fs::write(&path, config(&scratch.0, free_port(), "")).unwrap();
    let out = run_goprobe(&["agent", "--check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("OK (1 probes)"), "{}", out.stdout);

    // Nothing listens where a broken config said to.
    let port = free_port();
    fs::write(
        &path,
        format!("{}\nbogus = true\n", config(&scratch.0, port, "")),
    )
    .unwrap();
    let out = run_goprobe(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("bogus"), "{}", out.stderr);
    assert!(http_get(port, "/metrics").is_err());
}

/// Debian's Prometheus, on loopback, scraping the agent every second.
struct PrometheusServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl PrometheusServer {
    fn start(dir: &Path, agent_port: u16) -> Self {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("prometheus is not installed: `cargo xtask setup` installs Debian's package");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: goprobe\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start prometheus");
        let server = Self { child, port, log };
        poll("Prometheus to be ready", Duration::from_secs(30), || {
            matches!(http_get(server.port, "/-/ready"), Ok((200, _))).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {}", server.log()));
        server
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of an instant PromQL query with one result, or None if it has none.
    fn query(&self, promql: &str) -> Option<f64> {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )
        .ok()?;
        assert_eq!(status, 200, "{promql}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        let result = answer["data"]["result"].as_array()?;
        let value = result.first()?["value"][1].as_str()?;
        value.parse().ok()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent runs as an unprivileged user with exactly the capabilities the systemd unit grants
/// (read from deploy/systemd/goprobe.service) and traces a root-owned program that only root
/// may read (mode 0700): each of those capabilities is needed for that, and none is missing.
#[test]
fn runs_with_only_the_units_capabilities() {
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    };
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/goprobe.service"),
    )
    .unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect();
    let set = format!("-all,+{}", caps.join(",+"));

    use std::os::unix::fs::PermissionsExt as _;
    let scratch = Scratch::new("agent-caps");
    fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o755)).unwrap();
    let program = scratch.program("agentload");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o700)).unwrap();
    let goprobe = scratch.0.join("goprobe");
    fs::copy(goprobe_e2e::goprobe_bin(), &goprobe).unwrap();
    // The archive's directory belongs to the agent's user (nobody), as StateDirectory= does.
    let state = scratch.0.join("state");
    fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let text = config(&scratch.0, port, "").replace(
        &scratch.0.join("archive.redb").display().to_string(),
        &state.join("archive.redb").display().to_string(),
    );
    fs::write(&config_path, text).unwrap();

    let mut child = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(&goprobe)
        .args(["agent", "--config", config_path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(scratch.0.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || fs::read_to_string(scratch.0.join("agent.log")).unwrap_or_default();
    let result = (|| {
        poll("the agent to start", Duration::from_secs(30), || {
            log().contains("agent running").then_some(())
        })?;
        let mut run = GoProgram::start(&program, &["-n", "25", "-g", "2", "-phases", "1"], &[]);
        let pid = run.pid;
        poll("the agent to attach", Duration::from_secs(20), || {
            log().contains(&format!("in PID {pid} ")).then_some(())
        })?;
        run.go();
        let calls = u64_field(&run.finish(Duration::from_secs(60))?, "calls");
        poll(
            "/metrics to count every call",
            Duration::from_secs(15),
            || {
                let (_, text) = http_get(port, "/metrics").ok()?;
                (metric_sum(&text, COUNT, &[("function", FUNCTION)]) as u64 == calls).then_some(())
            },
        )
    })();
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        panic!("{e}\nagent log:\n{}", log());
    }
}

/// OTLP: the agent pushes the same histograms to an OTLP/HTTP endpoint, here a receiver in
/// the test that decodes the requests with the OpenTelemetry crates' own messages. Both
/// histogram kinds carry every call of the program.
#[test]
fn otlp_pushes_the_histograms() {
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest, metrics::v1::metric::Data,
    };
    use prost::Message as _;

    for kind in ["explicit", "exponential"] {
        eprintln!("--- {kind}");
        let scratch = Scratch::new(&format!("agent-otlp-{kind}"));
        let program = scratch.program("agentload");
        let receiver = OtlpReceiver::start();
        let port = free_port();
        let config_path = scratch.0.join("agent.toml");
        let otlp = format!(
            "\n[otlp]\nendpoint = \"http://127.0.0.1:{}/v1/metrics\"\ninterval = \"1s\"\nhistogram = \"{kind}\"\n",
            receiver.port
        );
        fs::write(&config_path, config(&scratch.0, port, "") + &otlp).unwrap();
        let agent = Agent::start(&config_path, port);
        let run = start_program(&agent, &program, &["-n", "50", "-g", "4", "-phases", "2"]);
        let calls = u64_field(&run.finish(Duration::from_secs(60)).unwrap(), "calls");

        // The data point of the traced function in a request, once it counts every call.
        let point = |body: &[u8]| -> Option<(u64, f64, u64)> {
            let request = ExportMetricsServiceRequest::decode(body).expect("a valid OTLP request");
            let metrics = &request
                .resource_metrics
                .first()?
                .scope_metrics
                .first()?
                .metrics;
            let metric = metrics
                .iter()
                .find(|m| m.name == "goprobe.function.latency")?;
            assert_eq!(metric.unit, "s");
            let has_function =
                |attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                    attributes
                        .iter()
                        .any(|a| a.key == "function" && format!("{:?}", a.value).contains(FUNCTION))
                };
            match metric.data.as_ref()? {
                Data::Histogram(h) if kind == "explicit" => {
                    let p = h.data_points.iter().find(|p| has_function(&p.attributes))?;
                    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                    Some((p.count, p.sum?, p.bucket_counts.iter().sum()))
                }
                Data::ExponentialHistogram(h) if kind == "exponential" => {
                    let p = h.data_points.iter().find(|p| has_function(&p.attributes))?;
                    let buckets = p.positive.as_ref()?;
                    Some((
                        p.count,
                        p.sum?,
                        buckets.bucket_counts.iter().sum::<u64>() + p.zero_count,
                    ))
                }
                other => panic!("{kind}: unexpected data {other:?}"),
            }
        };
        let (count, sum, in_buckets) = poll(
            "an OTLP export with every call",
            Duration::from_secs(20),
            || {
                receiver
                    .bodies()
                    .iter()
                    .rev()
                    .find_map(|b| point(b).filter(|p| p.0 == calls))
            },
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}; agent: {}", agent.probe.stderr.text()));
        assert_eq!(count, calls);
        assert_eq!(in_buckets, calls, "{kind}: buckets do not add up");
        let avg = sum / calls as f64;
        assert!(
            (0.002..0.004).contains(&avg),
            "{kind}: average {avg} s for 2 ms sleeps"
        );
        // The agent counts an export once the receiver has answered.
        let text = poll(
            "the agent to count its exports",
            Duration::from_secs(5),
            || {
                let text = agent.metrics();
                (metric_sum(&text, "goprobe_agent_otlp_exports_total", &[]) >= 1.0).then_some(text)
            },
        )
        .unwrap();
        assert_eq!(
            metric_sum(&text, "goprobe_agent_otlp_errors_total", &[]),
            0.0
        );
        agent.stop();
    }
}

/// A minimal OTLP/HTTP receiver: accepts POSTs, keeps their bodies, answers 200.
struct OtlpReceiver {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl OtlpReceiver {
    fn start() -> Self {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                let mut content_type = String::new();
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("content-type:") {
                        content_type = v.trim().to_string();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok()
                    && request_line.starts_with("POST /v1/metrics ")
                    && content_type == "application/x-protobuf"
                {
                    sink.lock().unwrap().push(body);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                } else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        Self { port, bodies }
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

/// The HTTP server is read-only, and with a bearer token configured every request must bring
/// it; `goprobe query --token-file` does.
#[test]
fn http_is_read_only_and_token_protected() {
    let scratch = Scratch::new("agent-http");
    let port = free_port();
    let token = scratch.0.join("token");
    fs::write(&token, "s3cret-token\n").unwrap();
    let text = config(&scratch.0, port, "").replace(
        &format!("listen = \"127.0.0.1:{port}\""),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nbearer_token_file = \"{}\"",
            token.display()
        ),
    );
    let config_path = scratch.0.join("agent.toml");
    fs::write(&config_path, text).unwrap();
    let agent = Agent::start(&config_path, port);
    let auth = "Authorization: Bearer s3cret-token";

    assert_eq!(http_get(port, "/metrics").unwrap().0, 401);
    assert_eq!(
        http_request(port, "GET", "/metrics", &["Authorization: Bearer wrong"])
            .unwrap()
            .0,
        401
    );
    let (status, body) = http_request(port, "GET", "/metrics", &[auth]).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("goprobe_agent_build_info"), "{body}");
    // The scheme is case-insensitive (RFC 9110); `bearer` was refused.
    for scheme in ["bearer", "BEARER"] {
        let header = format!("Authorization: {scheme} s3cret-token");
        let (status, _) = http_request(port, "GET", "/metrics", &[&header]).unwrap();
        assert_eq!(status, 200, "{header}");
    }
    // Times past year 9999 dropped the connection (from=) or answered 500 quoting a panic
    // (to=); `@nan` meant 1970. Each is a 400 that says why, and the agent answers on.
    for query in [
        "/api/v1/query?from=@99999999999999",
        "/api/v1/query?from=-1h&to=@1e300",
        "/api/v1/query?from=@nan",
        "/api/v1/diff?base=@0..@1e300&compare=-1h..now",
        "/api/v1/profile?from=@-1",
    ] {
        let (status, body) = http_request(port, "GET", query, &[auth]).unwrap();
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body.contains("out of range") || body.contains("invalid Unix time"),
            "{query}: {body}"
        );
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (status, _) = http_request(port, method, "/metrics", &[auth]).unwrap();
        assert_eq!(status, 405, "{method} must be refused");
    }
    assert_eq!(
        http_request(port, "GET", "/nowhere", &[auth]).unwrap().0,
        404
    );

    let url = format!("http://127.0.0.1:{port}");
    let refused = run_goprobe(&["query", "--url", &url, "--from", "-1m"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stderr.contains("HTTP 401"), "{}", refused.stderr);
    let token = token.to_str().unwrap();
    let ok = run_goprobe(&["query", "--url", &url, "--token-file", token, "--json"]);
    assert!(ok.status.success(), "{}", ok.stderr);
    let answer: Value = serde_json::from_str(&ok.stdout).unwrap();
    assert!(answer["histograms"].as_array().is_some(), "{answer}");
    agent.stop();
}

/// The agent sees new processes from the kernel's exec events, not only its scan: with a scan
/// every hour, three runs of a ~250 ms command (tests/go/shortlived, its calls after 200 ms of
/// start-up) are each attached as they start, and /metrics counts every call.
#[test]
fn exec_events_find_short_lived_processes() {
    let scratch = Scratch::new("agent-execs");
    let program = scratch.0.join("shortlived");
    fs::copy(matrix()[0].program("shortlived"), &program).unwrap();
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let text = config(&scratch.0, port, "")
        .replace("scan_interval = \"100ms\"", "scan_interval = \"1h\"")
        .replace(FUNCTION, "main.goprobeE2EShortlived");
    fs::write(&config_path, text).unwrap();
    let agent = Agent::start(&config_path, port);
    let mut calls = 0;
    for _ in 0..3 {
        let out = Command::new(&program)
            .args(["-nowait", "-startup", "200ms"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("ready "))
            .and_then(|p| p.parse().ok())
            .unwrap();
        let truth: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        calls += u64_field(&truth, "calls");
        agent.wait_attached(pid);
    }
    poll(
        &format!("/metrics to count {calls} calls"),
        Duration::from_secs(15),
        || {
            let text = agent.metrics();
            (metric_sum(&text, COUNT, &[("function", "main.goprobeE2EShortlived")]) as u64 == calls)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", agent.metrics(), agent.probe.stderr.text()));
    agent.stop();
}

/// An exec is a new process for the agent too: a program that replaces itself with a new run of
/// its own binary, in place, twice, has all its calls counted (each image's 1,500).
#[test]
fn exec_in_place_is_counted_in_full() {
    const REEXEC: &str = "main.goprobeE2EReexec";
    let scratch = Scratch::new("agent-reexec");
    let program = scratch.0.join("reexec");
    fs::copy(matrix()[0].program("reexec"), &program).unwrap();
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let config = config(&scratch.0, port, "").replace(
        &format!("functions = [\"go:{FUNCTION}\"]"),
        &format!("functions = [\"go:{REEXEC}\"]"),
    );
    fs::write(&config_path, config).unwrap();
    let agent = Agent::start(&config_path, port);
    let go = start_program(
        &agent,
        &program,
        &["-images", "3", "-n", "1500", "-startup", "100ms"],
    );
    let calls = u64_field(&go.finish(Duration::from_secs(60)).unwrap(), "calls");
    assert_eq!(calls, 4500);
    poll(
        &format!("/metrics to count {calls} calls"),
        Duration::from_secs(15),
        || {
            let text = agent.metrics();
            (metric_sum(&text, COUNT, &[("function", REEXEC)]) as u64 == calls).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}; last /metrics:\n{}", agent.metrics()));
    agent.stop();
}

/// Labels outlive the process: 300 runs of a ~70 ms command (tests/go/shortlived), eight at a
/// time, most of them gone before the agent next folds the ring buffer (many end before the
/// agent attached, which is not what this checks); every call counted carries the service label
/// the config gives, none lands in `service=""` (before the fix: 326 of 550).
#[test]
fn short_lived_processes_keep_their_labels() {
    let scratch = Scratch::new("agent-short-labels");
    let program = scratch.0.join("shortlived");
    fs::copy(matrix()[0].program("shortlived"), &program).unwrap();
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let text = config(&scratch.0, port, "service = \"short\"")
        .replace(FUNCTION, "main.goprobeE2EShortlived");
    fs::write(&config_path, text).unwrap();
    let agent = Agent::start(&config_path, port);
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let program = program.clone();
            std::thread::spawn(move || {
                for _ in 0..300 / 8 {
                    let out = Command::new(&program)
                        .args(["-nowait", "-startup", "60ms", "-n", "10", "-spread", "5ms"])
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{out:?}");
                }
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
    let function = [("function", "main.goprobeE2EShortlived")];
    // Settled: the count stops moving once every exit was seen.
    let mut last = -1.0;
    let text = poll("the count to settle", Duration::from_secs(15), || {
        std::thread::sleep(Duration::from_millis(500));
        let text = agent.metrics();
        let now = metric_sum(&text, COUNT, &function);
        let settled = now == last;
        last = now;
        settled.then_some(text)
    })
    .unwrap();
    let labelled = metric_sum(&text, COUNT, &[function[0], ("service", "short")]);
    let all = metric_sum(&text, COUNT, &function);
    assert!(
        labelled >= 200.0,
        "{labelled} calls labelled:\n{text}\n{}",
        agent.probe.stderr.text()
    );
    assert_eq!(
        labelled,
        all,
        "calls without their label:\n{text}\n{}",
        agent.probe.stderr.text()
    );
    // The profiler forgets a process once its last samples are written (each 1 s interval):
    // its symbolizer does not keep the memory maps of all 300 (it did, growing for ever).
    let kept = poll(
        "the profiler to forget the processes gone",
        Duration::from_secs(15),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let kept = metric_sum(&agent.metrics(), "goprobe_agent_symbolizer_processes", &[]);
            (kept <= 8.0).then_some(kept)
        },
    );
    assert!(
        kept.is_ok(),
        "{kept:?}: {}\n{}",
        agent.metrics(),
        agent.probe.stderr.text()
    );
    agent.stop();
}

/// A small tmpfs, mounted for one test and unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        Tmpfs(dir)
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk: redb fails every write after the first `No space left on device`, even once
/// space is back, until the database is opened again. The agent goes on tracing, counts the
/// intervals it could not write, says so once, and writes again once the file system has room.
#[test]
fn archive_resumes_after_a_full_disk() {
    let scratch = Scratch::new("agent-disk-full");
    let program = scratch.program("agentload");
    let disk = Tmpfs::mount(scratch.0.join("disk"), "4m");
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let text = config(&scratch.0, port, "").replace(
        &scratch.0.join("archive.redb").display().to_string(),
        &disk.0.join("archive.redb").display().to_string(),
    ) + "\n[profile]\nfrequency = 997\n";
    fs::write(&config_path, text).unwrap();
    let agent = Agent::start(&config_path, port);
    let mut go = start_program(
        &agent,
        &program,
        &["-n", "200000", "-g", "4", "-phases", "1"],
    );
    let metric = |name: &str| metric_sum(&agent.metrics(), name, &[]);
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        poll(what, Duration::from_secs(30), || ok().then_some(()))
            .unwrap_or_else(|e| panic!("{e}:\n{}\n{}", agent.metrics(), agent.probe.stderr.text()))
    };
    wait("a first archive write", &|| {
        metric("goprobe_agent_archive_writes_total") >= 1.0
    });

    // Fill the file system to the last byte.
    {
        use std::io::Write as _;
        let mut filler = fs::File::create(disk.0.join("filler")).unwrap();
        let block = vec![0xa5u8; 64 << 10];
        let mut small = vec![0xa5u8; 4096];
        while filler.write_all(&block).is_ok() {}
        while filler.write_all(&small).is_ok() {}
        small.truncate(1);
        while filler.write_all(&small).is_ok() {}
    }
    wait("archive writes to fail", &|| {
        metric("goprobe_agent_archive_errors_total") >= 3.0
    });
    let calls_while_full = metric_sum(&agent.metrics(), COUNT, &[("function", FUNCTION)]);
    let failures = metric("goprobe_agent_archive_errors_total");

    // Room again: the archive reopens and writes at the next interval.
    disk.resize("64m");
    wait("the archive to write again", &|| {
        agent.probe.stderr.text().contains(" again (")
    });
    let writes = metric("goprobe_agent_archive_writes_total");
    wait("two more archive writes", &|| {
        metric("goprobe_agent_archive_writes_total") >= writes + 2.0
    });
    let text = agent.metrics();
    // Tracing never stopped.
    assert!(
        metric_sum(&text, COUNT, &[("function", FUNCTION)]) > calls_while_full,
        "{text}"
    );
    assert!(failures >= 3.0);
    // Said once when writes (of intervals, of profiles, or opening the file) began failing, and
    // once when they worked again: not at every interval.
    let log = agent.probe.stderr.text();
    let failing: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("goprobe: cannot") && l.contains("tracing goes on"))
        .collect();
    assert!(!failing.is_empty() && failing.len() <= 3, "{log}");
    assert!(failing[0].contains("No space left on device"), "{log}");
    for kind in ["open the archive", "write intervals", "write CPU profiles"] {
        assert!(
            log.matches(&format!("cannot {kind}:")).count() <= 1,
            "{kind}: {log}"
        );
        assert!(
            log.matches(&format!("can {kind} again")).count() <= 1,
            "{log}"
        );
    }
    // The archive answers with what was written after the disk filled up.
    let (status, body) = http_get(port, "/api/v1/query?from=-10s&to=now").unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["histograms"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{answer}"
    );
    go.send("stop");
    drop(go);
    agent.stop();
    drop(disk);
}

/// A corrupt archive never stops the agent nor panics `goprobe query`: copies of a real archive
/// with each 4 KiB page zeroed in turn, and with bits flipped, give `query --archive` either an
/// answer or one line and exit 2 (redb itself panicked on some: exit 101 and a backtrace before);
/// the agent, started on a corrupt one, moves it aside, starts a fresh archive and counts it.
#[test]
fn corrupt_archive_is_moved_aside() {
    let scratch = Scratch::new("agent-corrupt");
    let program = scratch.program("agentload");
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    fs::write(&config_path, config(&scratch.0, port, "")).unwrap();
    let archive = scratch.0.join("archive.redb");
    {
        let agent = Agent::start(&config_path, port);
        let mut go = start_program(
            &agent,
            &program,
            &["-n", "20000", "-g", "4", "-phases", "1"],
        );
        poll("three archive writes", Duration::from_secs(30), || {
            (metric_sum(&agent.metrics(), "goprobe_agent_archive_writes_total", &[]) >= 3.0)
                .then_some(())
        })
        .unwrap();
        go.send("stop");
        drop(go);
        agent.stop();
    }
    let good = fs::read(&archive).unwrap();
    let mut copies: Vec<(String, Vec<u8>)> = (0..good.len() / 4096)
        .map(|page| {
            let mut bad = good.clone();
            bad[page * 4096..(page + 1) * 4096].fill(0);
            (format!("page {page} zeroed"), bad)
        })
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for seed in 0..60 {
        let mut bad = good.clone();
        for _ in 0..1 + seed % 6 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % bad.len() as u64) as usize;
            bad[at] ^= 1 << (state >> 60 & 7);
        }
        copies.push((format!("bits flipped (seed {seed})"), bad));
    }
    let copy = scratch.0.join("copy.redb");
    let mut corrupt = None;
    for (what, bad) in &copies {
        fs::write(&copy, bad).unwrap();
        let out = run_goprobe(&[
            "query",
            "--archive",
            copy.to_str().unwrap(),
            "--from",
            "-1d",
            "--json",
        ]);
        match out.status.code() {
            Some(0) => {}
            Some(2) => {
                assert_eq!(out.stderr.lines().count(), 1, "{what}: {}", out.stderr);
                assert!(out.stderr.contains("is corrupt"), "{what}: {}", out.stderr);
                corrupt.get_or_insert_with(|| bad.clone());
            }
            _ => panic!("{what}: {:?}\n{}", out.status, out.stderr),
        }
        assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
    }
    let corrupt = corrupt.expect("no copy was found corrupt");

    // The agent starts on a corrupt archive: moved aside, a fresh one, counted.
    fs::write(&archive, &corrupt).unwrap();
    let agent = Agent::start(&config_path, port);
    let log = agent.probe.stderr.text();
    assert!(log.contains("moved it aside to"), "{log}");
    let aside: Vec<PathBuf> = fs::read_dir(&scratch.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("archive.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{log}");
    assert_eq!(
        metric_sum(&agent.metrics(), "goprobe_agent_archive_corrupt_total", &[]),
        1.0
    );
    let (status, body) = http_get(port, "/api/v1/status").unwrap();
    assert_eq!(status, 200, "{body}");
    let status_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["archive"]["corrupt_total"], 1, "{body}");
    let (status, body) = http_get(port, "/api/v1/query?from=-1h").unwrap();
    assert_eq!(status, 200, "{body}");
    // And it traces on, into the fresh archive.
    let go = start_program(&agent, &program, &["-n", "50", "-g", "4", "-phases", "1"]);
    let calls = u64_field(&go.finish(Duration::from_secs(60)).unwrap(), "calls");
    agent.wait_count(calls);
    agent.stop();
}

/// Requests per second that wrk reaches against `port` in `seconds` (2 connections: the
/// server's requests wait 5 ms each, so the rate does not depend on how busy the CPUs are).
fn wrk_rate(port: u16, seconds: u32) -> f64 {
    let out = Command::new("wrk")
        .args(["-t1", "-c2", &format!("-d{seconds}s")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("wrk (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"))
}

/// The overhead budget: an HTTP server under wrk, traced by a pattern that matches its handler
/// and the helper the handler calls 200 times per request. Untraced it serves some 400 requests/s;
/// the helper's probes would cost it ~2 ms per request. Under the agent's default budget (1 % of
/// a CPU per process) the helper is detached within seconds, the server keeps ≥ 90 % of its
/// untraced rate, the shed function is reported (stderr, /metrics, /api/v1/status), and every
/// request the handler served is counted.
#[test]
fn overhead_budget_sheds_hot_probes() {
    const HANDLER: &str = "main.goprobeE2EBudgetHandle";
    const HELPER: &str = "main.goprobeE2EBudgetHelper";
    let scratch = Scratch::new("agent-budget");
    let program = scratch.0.join("budget");
    fs::copy(matrix()[0].program("budget"), &program).unwrap();
    let args = ["-helper", "200", "-work", "5ms"];
    let listening = |go: &GoProgram| -> u16 {
        go.stdout
            .wait_for("the server's port", Duration::from_secs(10), |l| {
                l.starts_with("listening ")
            })
            .unwrap()["listening ".len()..]
            .parse()
            .unwrap()
    };

    let mut untraced = GoProgram::start(&program, &args, &[]);
    untraced.go();
    let base = wrk_rate(listening(&untraced), 4);
    untraced.finish(Duration::from_secs(10)).unwrap();

    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let config = config(&scratch.0, port, "")
        .replace(
            &format!("functions = [\"go:{FUNCTION}\"]"),
            r#"functions = ["go:main.goprobeE2EBudget*"]"#,
        )
        .replace("overhead_budget = \"0\"\n", "");
    fs::write(&config_path, config).unwrap();
    let agent = Agent::start(&config_path, port);
    let go = start_program(&agent, &program, &args);
    let server = listening(&go);
    // The first budget window sheds the helper.
    wrk_rate(server, 4);
    agent
        .probe
        .stderr
        .wait_for("the helper shed", Duration::from_secs(10), |l| {
            l.contains("overhead budget: detached") && l.contains(HELPER)
        })
        .unwrap();
    let traced = wrk_rate(server, 4);
    let served = u64_field(&go.finish(Duration::from_secs(30)).unwrap(), "served");
    assert!(
        traced >= 0.9 * base,
        "traced {traced:.0} requests/s, untraced {base:.0}: under 90 %"
    );
    let text = agent.wait_count_of(HANDLER, served);
    assert_eq!(
        metric_sum(&text, "goprobe_agent_functions_shed_total", &[]),
        1.0,
        "{text}"
    );
    let (status, body) = http_get(port, "/api/v1/status").unwrap();
    assert_eq!(status, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    let shed = status["overhead"]["shed"].as_array().unwrap();
    assert_eq!(shed.len(), 1, "{body}");
    assert_eq!(shed[0]["function"], HELPER, "{body}");
    assert!(
        !agent
            .probe
            .stderr
            .text()
            .contains(&format!("detached {HANDLER}"))
    );
    agent.stop();
}

/// An agent whose one probe traces a stripped build of `byarg` (copied into a scratch
/// directory of its own): the probe's `functions` line replaced by `probe`, `before_probe`
/// (config sections) placed before it. The scratch directory lives as long as the first value.
fn byarg_agent(name: &str, probe: &str, before_probe: &str) -> (Scratch, Agent, PathBuf) {
    let scratch = Scratch::new(name);
    let build = matrix()
        .into_iter()
        .find(|b| b.variant == "stripped")
        .unwrap_or_else(|| matrix()[0].clone());
    let program = scratch.0.join("byarg");
    fs::copy(build.program("byarg"), &program).unwrap();
    let port = free_port();
    let config_path = scratch.0.join("agent.toml");
    let config = config(&scratch.0, port, "")
        .replace(&format!("functions = [\"go:{FUNCTION}\"]"), probe)
        .replace("[[probe]]", &format!("{before_probe}[[probe]]"));
    fs::write(&config_path, config).unwrap();
    let agent = Agent::start(&config_path, port);
    (scratch, agent, program)
}

/// A probe with `pack = "http-server"` on a stripped build: /metrics has one series per route,
/// with `method`, `path` and `status` labels and each route's exact count; the archive keeps the labels,
/// and a query names each route. Then the program runs again with /mid four times slower, and
/// `goprobe diff` answers "which route got slower": /mid's row moves from ~5 ms to ~20 ms, and
/// /fast's stays at ~1 ms.
#[test]
fn pack_labels_reach_metrics_the_archive_and_diff() {
    let (_scratch, agent, program) = byarg_agent("pack", r#"pack = "http-server""#, "");
    let port = agent.port;
    let go = start_program(&agent, &program, &["-calls", "1", "-req", "60"]);
    let truth = go.finish(Duration::from_secs(60)).unwrap();
    const SERVE: &str = "net/http.serverHandler.ServeHTTP";
    for route in ["/fast", "/mid", "/slow"] {
        let want = u64_field(&truth["routes"], route);
        poll(
            &format!("{want} calls of {route} in /metrics"),
            Duration::from_secs(15),
            || {
                let text = agent.metrics();
                (metric_sum(
                    &text,
                    COUNT,
                    &[
                        ("function", SERVE),
                        ("path", route),
                        ("method", "GET"),
                        ("status", &u64_field(&truth["statuses"], route).to_string()),
                    ],
                ) as u64
                    == want)
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {}", agent.metrics()));
    }
    let answer = poll(
        "the archive to hold each route",
        Duration::from_secs(15),
        || {
            let (status, body) = http_get(port, "/api/v1/query?from=-1h&to=now").ok()?;
            assert_eq!(status, 200, "{body}");
            let answer: Value = serde_json::from_str(&body).ok()?;
            let count = |route: &str| -> u64 {
                answer["histograms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|h| {
                        let status = u64_field(&truth["statuses"], route);
                        h["function"]
                            == format!(
                                "{SERVE}{{method=\"GET\",path=\"{route}\",status=\"{status}\"}}"
                            )
                    })
                    .map(|h| u64_field(h, "count"))
                    .sum()
            };
            ["/fast", "/mid", "/slow"]
                .iter()
                .all(|r| count(r) == u64_field(&truth["routes"], r))
                .then_some(answer)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}", agent.probe.stderr.text()));
    assert!(answer["histograms"].as_array().is_some());

    // The first run's calls are all archived, so its intervals ended before `boundary`; the
    // second run starts more than an interval (1 s) later, so its intervals begin after it.
    let boundary = now_s();
    std::thread::sleep(Duration::from_millis(1500));
    let go = start_program(
        &agent,
        &program,
        &["-calls", "1", "-req", "60", "-mid-ms", "20"],
    );
    let second = go.finish(Duration::from_secs(60)).unwrap();
    let base = format!("-1h..@{boundary:.3}");
    let compare = format!("@{:.3}..", boundary + 1.0);
    let url = format!("http://127.0.0.1:{port}");
    let diff = poll(
        "the archive to hold the second run",
        Duration::from_secs(15),
        || {
            let out = run_goprobe(&[
                "diff", "--url", &url, "--json", "-f", SERVE, &base, &compare,
            ]);
            assert!(out.status.success(), "{}", out.stderr);
            let diff: Value = serde_json::from_str(&out.stdout).unwrap();
            let done = ["/fast", "/mid", "/slow"].iter().all(|route| {
                route_row(&diff, route)["compare"]["count"].as_u64()
                    == Some(u64_field(&second["routes"], route))
            });
            done.then_some(diff)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}", agent.probe.stderr.text()));
    for (route, base_ms, compare_ms) in [("/fast", 1, 1), ("/mid", 5, 20), ("/slow", 20, 20)] {
        let row = route_row(&diff, route);
        assert_eq!(
            u64_field(&row["base"], "count"),
            u64_field(&truth["routes"], route),
            "{diff}"
        );
        for (side, ms) in [("base", base_ms), ("compare", compare_ms)] {
            let p50 = u64_field(&row[side], "p50_ns") as f64 / 1e6;
            assert!(
                p50 >= ms as f64 && p50 < ms as f64 * 1.5 + 1.0,
                "{route} {side}: p50 {p50} ms for {ms} ms: {diff}"
            );
        }
    }
    let text = run_goprobe(&["diff", "--url", &url, "-f", SERVE, &base, &compare]);
    let mid = text
        .stdout
        .lines()
        .find(|l| l.contains("path=\"/mid\""))
        .unwrap_or_else(|| panic!("no /mid row:\n{}", text.stdout));
    assert!(mid.contains('▲'), "{}", text.stdout);
    agent.stop();
}

/// The `diff` row of the http-server pack's `route`.
fn route_row<'a>(diff: &'a Value, route: &str) -> &'a Value {
    diff["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["function"]
                .as_str()
                .is_some_and(|f| f.contains(&format!("path=\"{route}\"")))
        })
        .unwrap_or(&Value::Null)
}

/// The agent's cardinality cap is a top-K by calls, not first come: with `max_values = 2`, the
/// first two keys take the rows, and a key called most later (`gamma`) takes one of them at an
/// interval's end, counted under its own series from then on. Every call is counted once, in a
/// key's series or in `other`, and /metrics says how many values lost their row.
#[test]
fn agent_cap_keeps_the_most_called_values() {
    const LOOKUP: &str = "main.goprobeE2ELookup";
    let (_scratch, agent, program) = byarg_agent(
        "topk",
        &format!("functions = [\"go:{LOOKUP}(key string, n int, hit bool)\"]\nby = \"key\""),
        "[histogram]\nmax_values = 2\n\n",
    );
    let go = start_program(
        &agent,
        &program,
        &["-calls", "50", "-req", "1", "-late", "2500"],
    );
    let truth = go.finish(Duration::from_secs(120)).unwrap();
    let keys = &truth["keys"];
    let total: u64 = ["alpha", "beta", "long", "unmapped", "gamma"]
        .iter()
        .map(|k| u64_field(keys, k))
        .sum();
    let text = agent.wait_count_of(LOOKUP, total);
    let gamma = metric_sum(&text, COUNT, &[("function", LOOKUP), ("key", "gamma")]) as u64;
    assert!(
        gamma > 0 && gamma < u64_field(keys, "gamma"),
        "gamma: {gamma} calls in its own series (it should take a row after its first interval)\n{text}"
    );
    let demoted = metric_sum(
        &text,
        "goprobe_agent_by_values_total",
        &[("outcome", "demoted")],
    );
    assert!(demoted >= 1.0, "{text}");
    agent.stop();
}

/// `where` in a probe, as `funclatency --where`: with the http-server pack and
/// `where = "status >= 500"`, /metrics has the failing route's calls only, exactly, and the
/// calls left out are counted.
#[test]
fn agent_where_keeps_only_matching_calls() {
    let (_scratch, agent, program) = byarg_agent(
        "where",
        "pack = \"http-server\"\nwhere = \"status >= 500\"",
        "",
    );
    let go = start_program(&agent, &program, &["-calls", "1", "-req", "30"]);
    let truth = go.finish(Duration::from_secs(60)).unwrap();
    const SERVE: &str = "net/http.serverHandler.ServeHTTP";
    let slow = u64_field(&truth["routes"], "/slow");
    let text = agent.wait_count_of(SERVE, slow);
    assert_eq!(
        metric_sum(&text, COUNT, &[("function", SERVE), ("status", "503")]) as u64,
        slow,
        "{text}"
    );
    let left_out = u64_field(&truth["routes"], "/fast") + u64_field(&truth["routes"], "/mid");
    poll(
        "the calls left out to be counted",
        Duration::from_secs(10),
        || {
            let text = agent.metrics();
            (metric_sum(
                &text,
                "goprobe_agent_by_values_total",
                &[("outcome", "filtered_out")],
            ) as u64
                == left_out)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}", agent.metrics()));
    agent.stop();
}

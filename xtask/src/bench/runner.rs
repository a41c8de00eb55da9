//! One run of a Go test program under a tracer, as the sections that compare tracers make it:
//! start the program and wait for its `ready PID` line, attach the tracer (goprobe, probes that
//! do nothing, the goprobe agent or a bpftrace script) and wait until its probes are in place,
//! give the go-ahead, then read the program's JSON result and what the tracer counted. Every
//! section runs its programs through here, so every tracer is started and stopped the same way.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Env;
use super::json::Json;
use super::proc::{self, Proc};
use crate::util;

/// The Go program's environment for per-call runs: one P and no asynchronous preemption, so
/// the goroutine stays on its thread. bpftrace's uretprobe crashes the program otherwise (a
/// preempted goroutine returns on another thread: `SIGILL` at the uretprobe trampoline).
pub const ONE_THREAD: [(&str, &str); 2] = [("GOMAXPROCS", "1"), ("GODEBUG", "asyncpreemptoff=1")];

/// What traces the Go program in one run.
#[derive(Clone)]
pub enum Tracer {
    None,
    /// `goprobe funclatency -v --json -p PID go:FUNCTION`, with extra environment.
    Goprobe(Vec<(&'static str, String)>),
    /// The same with extra arguments (`--split`).
    GoprobeArgs(Vec<&'static str>),
    /// Probes that do nothing, at these file offsets (`goprobe dev attach`).
    Bare(Vec<u64>),
    /// `goprobe agent` with one probe on FUNCTION in the program's file, as the daemon runs;
    /// counts and losses are read from its /metrics.
    Agent,
    /// The same with `histogram.split = true`.
    AgentSplit,
    /// A bpftrace script; `{bin}` stands for the program's path. It must print "attached" once
    /// its probes are in place (on the program's first `goprobeBenchPing`).
    Bpftrace(String),
}

/// One run: the program's JSON result, and goprobe's output when it traced.
pub struct RunOut {
    pub result: Json,
    pub goprobe: Option<GoprobeOut>,
    pub bpftrace_stdout: Vec<String>,
}

/// What goprobe printed: its JSON lines, counters and BPF statistics.
#[derive(Default)]
pub struct GoprobeOut {
    pub lines: Vec<Json>,
    counters: Option<Json>,
    bpf_stats: Option<Json>,
    /// CPU time and peak RSS, read when the program printed its result.
    pub cpu: Option<Duration>,
    pub peak_rss_kib: Option<u64>,
}

impl GoprobeOut {
    pub fn parse(stdout: &[String], stderr: &[String]) -> GoprobeOut {
        let mut out = GoprobeOut {
            lines: stdout
                .iter()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| Json::parse(l).ok())
                .collect(),
            ..GoprobeOut::default()
        };
        for l in stderr {
            if let Some(c) = l.strip_prefix("goprobe: counters ") {
                out.counters = Json::parse(c).ok();
            }
            if let Some(s) = l.strip_prefix("goprobe: bpf stats ") {
                out.bpf_stats = Json::parse(s).ok();
            }
        }
        out
    }

    /// Sum of a numeric field over the JSON lines of one function.
    /// `field` summed over the lines of `function`, those of its argument values (`--by`:
    /// `function{key="..."}`) included.
    pub fn sum(&self, function: &str, field: &str) -> u64 {
        let labelled = format!("{function}{{");
        self.lines
            .iter()
            .filter(|l| {
                l.str("function")
                    .is_some_and(|f| f == function || f.starts_with(&labelled))
            })
            .filter_map(|l| l.u64(field))
            .sum()
    }

    pub fn line(&self, function: &str) -> Option<&Json> {
        self.lines
            .iter()
            .find(|l| l.str("function") == Some(function))
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .as_ref()
            .and_then(|c| c.u64(name))
            .unwrap_or(0)
    }

    /// Translated (verified) size in bytes of the entry and the return program
    /// (GOPROBE_BPF_STATS=1).
    pub fn bpf_translated_bytes(&self) -> Option<(u64, u64)> {
        let stats = self.bpf_stats.as_ref()?;
        let size = |kind: &str| {
            stats.array().iter().find_map(|p| {
                let name = p.str("name")?;
                name.contains(kind).then(|| p.u64("translated_bytes"))?
            })
        };
        Some((size("entry")?, size("return")?))
    }

    /// ns per run of the entry and the return program (GOPROBE_BPF_STATS=1).
    pub fn bpf_ns_per_run(&self) -> Option<(f64, f64)> {
        let stats = self.bpf_stats.as_ref()?;
        let per_run = |kind: &str| {
            stats.array().iter().find_map(|p| {
                let name = p.str("name")?;
                let runs = p.f64("runs")?;
                (name.contains(kind) && runs > 0.0).then(|| p.f64("run_ns").unwrap_or(0.0) / runs)
            })
        };
        Some((per_run("entry")?, per_run("return")?))
    }
}

pub fn run_program(
    env: &Env,
    bin: &Path,
    args: &[String],
    program_env: &[(&str, &str)],
    tracer: &Tracer,
    function: &str,
) -> Result<RunOut> {
    let mut c = util::cmd(bin);
    c.args(args).envs(program_env.iter().copied());
    let (mut program, pid) = start_program("the Go program", &mut c)?;

    let mut agent_port = None;
    let mut tracer_proc = match tracer {
        Tracer::None => None,
        Tracer::Goprobe(extra) => {
            let mut c = util::cmd(&env.goprobe);
            // -v for the counters, without the kernel log unless asked: as goprobe runs by
            // default.
            c.args(["funclatency", "-v", "--json", "-p", &pid.to_string()])
                .arg(format!("go:{function}"))
                .env("GOPROBE_KERNEL_LOG", "0")
                .envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
            Some(start_goprobe(&mut c)?)
        }
        Tracer::GoprobeArgs(extra) => {
            let mut c = util::cmd(&env.goprobe);
            c.args(["funclatency", "-v", "--json", "-p", &pid.to_string()])
                .args(extra)
                .arg(format!("go:{function}"))
                .env("GOPROBE_KERNEL_LOG", "0");
            Some(start_goprobe(&mut c)?)
        }
        Tracer::Bare(offsets) => {
            let mut c = util::cmd(&env.goprobe);
            c.args(["dev", "attach", "-p", &pid.to_string()])
                .args(offsets.iter().map(|o| o.to_string()));
            let p = Proc::spawn("goprobe dev attach", &mut c)?;
            p.expect_line(
                "'attached' line",
                |l| l.contains("attached"),
                Duration::from_secs(60),
            )?;
            Some(p)
        }
        Tracer::Agent | Tracer::AgentSplit => {
            let split = if matches!(tracer, Tracer::AgentSplit) {
                "[histogram]\nsplit = true\n\n"
            } else {
                ""
            };
            let dir = util::root().join("target/bench");
            std::fs::create_dir_all(&dir)?;
            let port = free_port()?;
            agent_port = Some(port);
            // No overhead budget: these rows measure what the agent counts and costs while it
            // traces; with the default budget it would shed this hot function within seconds (the
            // budget section measures that guard).
            let archive = dir.join(format!("agent-{pid}.redb"));
            let config = dir.join(format!("agent-{pid}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[agent]\nscan_interval = \"100ms\"\noverhead_budget = \"0\"\n\n\
                     [http]\nlisten = \"127.0.0.1:{port}\"\n\n\
                     {split}[archive]\npath = \"{}\"\n\n[[probe]]\nname = \"bench\"\n\
                     functions = [\"go:{function}\"]\nexe = [\"{}\"]\n",
                    archive.display(),
                    bin.display()
                ),
            )?;
            let mut c = util::cmd(&env.goprobe);
            c.arg("agent").arg("--config").arg(&config);
            let p = Proc::spawn("goprobe agent", &mut c)?;
            let attached = format!("in PID {pid} ");
            p.expect_line(
                "'attached' line",
                |l| l.contains("attached") && l.contains(&attached),
                Duration::from_secs(60),
            )?;
            Some(p)
        }
        Tracer::Bpftrace(script) => {
            let script = script.replace("{bin}", &bin.display().to_string());
            let mut c = util::cmd("bpftrace");
            c.arg("-e").arg(&script);
            let p = Proc::spawn("bpftrace", &mut c)?;
            p.expect_line(
                "'attached' line",
                |l| l == "attached",
                Duration::from_secs(120),
            )?;
            Some(p)
        }
    };

    let gp_pid = match tracer {
        Tracer::Goprobe(_) | Tracer::GoprobeArgs(_) | Tracer::Agent | Tracer::AgentSplit => {
            tracer_proc.as_ref().map(Proc::pid)
        }
        _ => None,
    };
    let cpu_before = gp_pid.and_then(proc::cpu_time);
    program.send_line("go")?;
    let timeout = Duration::from_secs(900);
    let (_, line) = program.expect_line("result", |l| l.starts_with('{'), timeout)?;
    let cpu_after = gp_pid.and_then(proc::cpu_time);
    let peak = gp_pid.and_then(proc::peak_rss_kib);
    let status = program.wait(Duration::from_secs(30))?;
    if !status.success() {
        bail!(
            "the Go program failed ({status}): {}",
            proc::tail(&program.stderr.text())
        );
    }
    let result = Json::parse(&line).with_context(|| format!("result line {line:?}"))?;

    let mut goprobe = None;
    let mut bpftrace_stdout = Vec::new();
    if let Some(port) = agent_port
        && let Some(mut t) = tracer_proc.take()
    {
        // The agent keeps running: read what it counted once /metrics has every call (it
        // drains the ring buffer every 20 ms), then stop it.
        let calls = result.u64("calls");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = GoprobeOut::default();
        loop {
            let text = http_get(port, "/metrics").unwrap_or_default();
            let count = metric_sum(&text, "goprobe_function_latency_seconds_count", function);
            let lost = metric_sum(
                &text,
                "goprobe_agent_kernel_events_total",
                "counter=\"events_lost\"",
            );
            out.lines = vec![Json::parse(&format!(
                "{{\"function\": \"{function}\", \"count\": {count}}}"
            ))?];
            out.counters = Some(Json::parse(&format!("{{\"events_lost\": {lost}}}"))?);
            if calls.is_some_and(|c| count + lost >= c) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        goprobe = Some(out);
        t.signal("TERM");
        t.wait(Duration::from_secs(60))?;
    }
    if let Some(mut t) = tracer_proc.take() {
        // goprobe and `dev attach` exit by themselves once the process is gone (they look every
        // 200 ms); bpftrace does not.
        if !matches!(tracer, Tracer::Bpftrace(_)) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while t.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if t.running() {
            t.interrupt(Duration::from_secs(120))?;
        } else {
            t.wait(Duration::from_secs(10))?;
        }
        match tracer {
            Tracer::Goprobe(_) | Tracer::GoprobeArgs(_) => {
                goprobe = Some(GoprobeOut::parse(&t.stdout.all(), &t.stderr.all()));
            }
            Tracer::Bpftrace(_) => bpftrace_stdout = t.stdout.all(),
            _ => {}
        }
    }
    if let Some(out) = goprobe.as_mut() {
        out.cpu = cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a));
        out.peak_rss_kib = peak;
    }
    Ok(RunOut {
        result,
        goprobe,
        bpftrace_stdout,
    })
}

/// Starts a Go test program and waits for the `ready PID` line it prints before it waits for
/// the go-ahead (`tests/go/internal/harness`): the program and its PID.
pub fn start_program(name: &str, c: &mut Command) -> Result<(Proc, u32)> {
    let program = Proc::spawn(name, c)?;
    let (_, ready) = program.expect_line(
        "ready line",
        |l| l.starts_with("ready "),
        Duration::from_secs(20),
    )?;
    let pid = ready["ready ".len()..].trim().parse()?;
    Ok((program, pid))
}

/// Starts `goprobe funclatency` and waits for its `Tracing` line: its probes are in place.
pub fn start_goprobe(c: &mut Command) -> Result<Proc> {
    let p = Proc::spawn("goprobe", c)?;
    p.expect_line(
        "'Tracing' line",
        |l| l.starts_with("Tracing "),
        Duration::from_secs(60),
    )?;
    Ok(p)
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The body of `GET http://127.0.0.1:PORT/PATH` (HTTP/1.0, so no chunking).
fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Sum of the Prometheus samples of `name` whose labels contain `label` (a function name or
/// a `key="value"` pair).
fn metric_sum(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Says "attached" on the program's first ping, i.e. once bpftrace's probes are in place.
pub const PING: &str = "uprobe:{bin}:main.goprobeBenchPing /@attached == 0/ { @attached = 1; printf(\"attached\\n\"); }";

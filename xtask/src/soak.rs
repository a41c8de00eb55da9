//! `cargo xtask soak --minutes N`: the agent left running, as on a host for months, compressed.
//! `goprobe agent` traces an HTTP server (tests/go/budget) that wrk loads the whole time, and a
//! short-lived command (tests/go/shortlived) started every 200 ms, so processes come and go.
//! Every 30 s it records the agent's RSS, open file descriptors, BPF maps, the series on
//! /metrics and the calls lost or not timed; at the end, whether every request the server
//! served was counted. The table goes to target/soak/soak.md (and stdout): what BENCHMARKS.md's
//! soak row quotes. Not part of `cargo xtask test`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{gobuild, util};

/// How often the agent is measured.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    bpf_maps: usize,
    series: usize,
    counted: f64,
    not_timed: f64,
}

pub fn run(minutes: u64) -> Result<()> {
    if !util::is_root() {
        bail!("`cargo xtask soak` must run as root: the agent loads eBPF programs");
    }
    crate::build_agent()?;
    let matrix = gobuild::Matrix {
        toolchains: vec![gobuild::find_toolchain("1.27")?],
        entries: vec![(0, gobuild::Variant::Default)],
    };
    gobuild::build(&matrix, Some(&["budget", "shortlived"]))?;
    let programs = gobuild::output_dir().join("go1.27/default");
    let dir = util::root().join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let server = dir.join("budget");
    let short = dir.join("shortlived");
    std::fs::copy(programs.join("budget"), &server)?;
    std::fs::copy(programs.join("shortlived"), &short)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nscan_interval = \"1s\"\n# Exact counts are the point here, not the budget.\n\
             overhead_budget = \"0\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[archive]\n\
             path = \"{}\"\ninterval = \"10s\"\n\n[[probe]]\nname = \"soak\"\n\
             functions = [\"go:main.goprobeE2EBudgetHandle\", \"go:main.goprobeE2EShortlived\"]\n\
             exe = [\"{}/*\"]\n",
            dir.join("archive.redb").display(),
            dir.display()
        ),
    )?;
    let mut agent = Command::new(crate::goprobe_bin())
        .args(["agent", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log"))?)
        .spawn()
        .context("starting goprobe agent")?;
    let agent_pid = agent.id();
    wait_until(Duration::from_secs(60), || metrics(port).is_some())
        .context("the agent did not answer /metrics")?;

    let mut server_proc = Command::new(&server)
        .args(["-helper", "20", "-work", "2ms"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(server_proc.stdout.take().unwrap()).lines();
    let server_pid = server_proc.id();
    wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(dir.join("agent.log"))
            .is_ok_and(|log| log.contains(&format!("in PID {server_pid} ")))
    })
    .context("the agent did not attach to the server")?;
    writeln!(server_proc.stdin.as_mut().unwrap(), "go")?;
    let server_port: u16 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening ").map(|p| p.trim().to_string()))
        .context("the server's port")?
        .parse()?;
    let total = Duration::from_secs(minutes * 60);
    let mut wrk = Command::new("wrk")
        .args(["-t1", "-c4", &format!("-d{}s", total.as_secs())])
        .arg(format!("http://127.0.0.1:{server_port}/"))
        .stdout(Stdio::piped())
        .spawn()
        .context("running wrk (cargo xtask setup installs it)")?;

    let started = Instant::now();
    let mut samples = vec![sample(agent_pid, port, Duration::ZERO)?];
    let mut next_sample = SAMPLE_EVERY;
    let mut short_runs = 0u64;
    let mut short_calls = 0u64;
    while started.elapsed() < total {
        let out = Command::new(&short)
            .args(["-nowait", "-n", "5", "-startup", "50ms", "-spread", "5ms"])
            .output()?;
        short_runs += 1;
        if let Some(calls) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with('{'))
            .and_then(|l| l.split("\"calls\":").nth(1))
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            short_calls += calls;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() >= next_sample {
            samples.push(sample(agent_pid, port, started.elapsed())?);
            eprintln!("soak: {}", row(samples.last().unwrap()));
            next_sample += SAMPLE_EVERY;
        }
    }
    let _ = wrk.wait();
    drop(server_proc.stdin.take());
    let served: f64 = lines
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("\"served\":")
                .nth(1)
                .and_then(|v| v.trim_end_matches('}').trim().parse().ok())
        })
        .unwrap_or(f64::NAN);
    let _ = server_proc.wait();
    std::thread::sleep(Duration::from_secs(2));
    let last = sample(agent_pid, port, started.elapsed())?;
    let handled = metric(
        port,
        "goprobe_function_latency_seconds_count{function=\"main.goprobeE2EBudgetHandle\"",
    );
    let short_counted = metric(
        port,
        "goprobe_function_latency_seconds_count{function=\"main.goprobeE2EShortlived\"",
    );
    samples.push(last);
    stop(&mut agent);

    let mut md = String::new();
    md.push_str(&format!(
        "Soak: `cargo xtask soak --minutes {minutes}`: goprobe agent tracing an HTTP server under wrk and a short-lived command started every 200 ms ({short_runs} runs).\n\n"
    ));
    md.push_str("| time (min:s) | agent RSS | fds | BPF maps | series | calls counted | calls not timed |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for s in &samples {
        md.push_str(&format!("{}\n", row(s)));
    }
    md.push_str(&format!(
        "\nServer requests served {served:.0}, handler calls counted {handled:.0}; short-lived calls made {short_calls}, counted {short_counted:.0} (calls of a run that ends before the agent attaches are not counted).\n"
    ));
    std::fs::write(dir.join("soak.md"), &md)?;
    print!("{md}");
    Ok(())
}

fn row(s: &Sample) -> String {
    format!(
        "| {}:{:02} | {:.1} MiB | {} | {} | {} | {:.0} | {:.0} |",
        s.at.as_secs() / 60,
        s.at.as_secs() % 60,
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.bpf_maps,
        s.series,
        s.counted,
        s.not_timed
    )
}

fn sample(pid: u32, port: u16, at: Duration) -> Result<Sample> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("the agent exited")?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    let text = metrics(port).unwrap_or_default();
    Ok(Sample {
        at,
        rss_kib,
        fds: fds.len(),
        bpf_maps: fds.iter().filter(|l| l.contains("bpf-map")).count(),
        series: text
            .lines()
            .filter(|l| l.starts_with("goprobe_function_latency_seconds_count{"))
            .count(),
        counted: sum(&text, "goprobe_function_latency_seconds_count{"),
        not_timed: sum(&text, "goprobe_agent_calls_not_timed_total{"),
    })
}

fn metrics(port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

fn metric(port: u16, prefix: &str) -> f64 {
    sum(&metrics(port).unwrap_or_default(), prefix)
}

fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {timeout:?}")
}

fn stop(agent: &mut Child) {
    // The agent this command started: SIGTERM, so that it writes its last interval.
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
}

//! The overhead budget: what the agent's guard costs, and what it saves. `tests/go/budget` is an
//! HTTP server whose handler waits 5 ms (a database call) and calls a small helper 200 times;
//! wrk loads it with 2 connections. It runs untraced, then under `goprobe agent` with a probe
//! that matches both the handler and the helper: with the budget off, and with the default
//! budget (1 % of a CPU per process), measured after the guard's first window. The agent's CPU
//! in each is the guard's own cost on top of the tracing.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Env;
use super::proc::{self, Proc};
use super::report::table_head;
use super::runner::free_port;
use super::stats::{fmt_summary, pct, ratio};
use crate::util;

pub struct BudgetRow {
    label: &'static str,
    /// Requests per second, per repetition.
    rate: Vec<f64>,
    /// Against the untraced run of the same repetition.
    ratio: Vec<f64>,
    /// The agent's CPU over the measured seconds, % of one CPU.
    agent_cpu: Vec<f64>,
    /// Functions the guard detached.
    shed: Vec<f64>,
}

pub struct BudgetReport {
    seconds: u32,
    rows: Vec<BudgetRow>,
}

/// The guard's window plus a margin: the measured seconds start after it.
const WARM_UP_SECS: u32 = 4;

pub fn measure(env: &Env) -> Result<BudgetReport> {
    let seconds = if env.plan.quick { 3 } else { 5 };
    let mut rows: Vec<BudgetRow> = [
        "untraced",
        "goprobe agent, no budget",
        "goprobe agent, default budget (1 %)",
    ]
    .into_iter()
    .map(|label| BudgetRow {
        label,
        rate: Vec::new(),
        ratio: Vec::new(),
        agent_cpu: Vec::new(),
        shed: Vec::new(),
    })
    .collect();
    for _ in 0..env.plan.reps.min(3) {
        let (base, _, _) = one_run(env, None, seconds)?;
        rows[0].rate.push(base);
        rows[0].ratio.push(1.0);
        for (row, budget) in [(1, "0"), (2, "1%")] {
            let (rate, cpu, shed) = one_run(env, Some(budget), seconds)?;
            rows[row].rate.push(rate);
            rows[row].ratio.push(rate / base);
            rows[row].agent_cpu.push(cpu);
            rows[row].shed.push(shed);
        }
    }
    Ok(BudgetReport { seconds, rows })
}

/// One server, untraced or under the agent with `budget`: its requests/s over `seconds` after the
/// warm-up, the agent's CPU (% of one CPU) over them, and the functions it shed.
fn one_run(env: &Env, budget: Option<&str>, seconds: u32) -> Result<(f64, f64, f64)> {
    let dir = util::root().join("target/bench/budget");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let server = dir.join("budget");
    std::fs::copy(&env.budget, &server).context("copying the budget server")?;
    let agent = match budget {
        None => None,
        Some(budget) => {
            let port = free_port()?;
            let config = dir.join("agent.toml");
            std::fs::write(
                &config,
                format!(
                    "[agent]\nscan_interval = \"100ms\"\noverhead_budget = \"{budget}\"\n\n\
                     [http]\nlisten = \"127.0.0.1:{port}\"\n\n[archive]\npath = \"{}\"\n\n\
                     [[probe]]\nname = \"bench\"\nfunctions = [\"go:main.goprobeE2EBudget*\"]\n\
                     exe = [\"{}\"]\n",
                    dir.join("archive.redb").display(),
                    server.display()
                ),
            )?;
            let mut c = util::cmd(&env.goprobe);
            c.arg("agent").arg("--config").arg(&config);
            let p = Proc::spawn("goprobe agent", &mut c)?;
            p.expect_line(
                "the agent's start line",
                |l| l.starts_with("goprobe: agent running"),
                Duration::from_secs(60),
            )?;
            Some((p, port))
        }
    };
    let mut c = util::cmd(&server);
    c.args(["-helper", "200", "-work", "5ms"]);
    let mut program = Proc::spawn("budget server", &mut c)?;
    let (_, ready) = program.expect_line(
        "ready",
        |l| l.starts_with("ready "),
        Duration::from_secs(20),
    )?;
    let pid = ready["ready ".len()..].trim().to_string();
    if let Some((agent, _)) = &agent {
        let attached = format!("in PID {pid} ");
        agent.expect_line(
            "the attach",
            |l| l.contains("attached") && l.contains(&attached),
            Duration::from_secs(60),
        )?;
    }
    program.write_line("go")?;
    let (_, listening) = program.expect_line(
        "the port",
        |l| l.starts_with("listening "),
        Duration::from_secs(10),
    )?;
    let port: u16 = listening["listening ".len()..].trim().parse()?;
    wrk(port, WARM_UP_SECS)?;
    let agent_pid = agent.as_ref().map(|(p, _)| p.pid());
    let cpu_before = agent_pid.and_then(proc::cpu_time);
    let started = Instant::now();
    let rate = wrk(port, seconds)?;
    let cpu = match (agent_pid.and_then(proc::cpu_time), cpu_before) {
        (Some(after), Some(before)) => {
            (after - before).as_secs_f64() * 100.0 / started.elapsed().as_secs_f64()
        }
        _ => 0.0,
    };
    let shed = match &agent {
        Some((_, port)) => shed_total(*port),
        None => 0.0,
    };
    // It serves until its stdin closes. (Not SIGINT: a Go program started with SIGINT ignored,
    // as a background job of a non-interactive shell is, keeps ignoring it.)
    program.send_line("")?;
    program.wait(Duration::from_secs(10))?;
    if let Some((mut agent, _)) = agent {
        agent.interrupt(Duration::from_secs(30))?;
    }
    Ok((rate, cpu, shed))
}

fn wrk(port: u16, seconds: u32) -> Result<f64> {
    let out = Command::new("wrk")
        .args(["-t1", "-c2", &format!("-d{seconds}s")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
    {
        Some(rate) => Ok(rate),
        None => bail!("no rate in wrk's output: {text}"),
    }
}

/// `goprobe_agent_functions_shed_total` from the agent's /metrics.
fn shed_total(port: u16) -> f64 {
    let Ok(out) = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
    else {
        return f64::NAN;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("goprobe_agent_functions_shed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn render(w: &mut String, b: &BudgetReport) {
    let _ = writeln!(w, "## Overhead budget\n");
    let _ = writeln!(
        w,
        "`tests/go/budget` is an HTTP server whose handler waits 5 ms (a database call) and calls a \
         small helper 200 times; wrk loads it with 2 connections for {} s, after {WARM_UP_SECS} s of \
         warm-up (the guard's first window). Under `goprobe agent` a probe matches both the handler \
         and the helper, whose probes cost about 2 ms per request on this machine. With the default \
         budget the agent detaches the helper and keeps the handler; its CPU is what the agent \
         costs, the guard included (it counts calls per function and process, and checks every 2 s).\n",
        b.seconds
    );
    table_head(
        w,
        "| server | requests/s | ÷ untraced | goprobe agent CPU | functions shed |",
    );
    for r in &b.rows {
        let traced = r.label != "untraced";
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            r.label,
            fmt_summary(&r.rate, |v| format!("{v:.0}")),
            if traced {
                fmt_summary(&r.ratio, ratio)
            } else {
                String::new()
            },
            if traced {
                fmt_summary(&r.agent_cpu, pct)
            } else {
                String::new()
            },
            if traced {
                fmt_summary(&r.shed, |v| format!("{v:.0}"))
            } else {
                String::new()
            },
        );
    }
    let _ = writeln!(w);
}

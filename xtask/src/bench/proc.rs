//! Child processes for the benchmarks: their output collected line by line with arrival times,
//! waiting for a line, signals, and what /proc says about them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

/// Lines of one output stream, with when each arrived, and whether the stream has closed.
type LinesState = (Vec<(Instant, String)>, bool);

/// Lines of one output stream, shared with the thread that reads it.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<LinesState>, Condvar)>);

impl Lines {
    fn collect(self, stream: impl Read + Send + 'static) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let reader = BufReader::new(stream);
            for line in reader.split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                let (lock, cond) = &*self.0;
                lock.lock()
                    .expect("lines lock")
                    .0
                    .push((Instant::now(), line));
                cond.notify_all();
            }
            let (lock, cond) = &*self.0;
            lock.lock().expect("lines lock").1 = true;
            cond.notify_all();
        })
    }

    /// The first line (from the start) that `pred` accepts, waiting up to `timeout` for it.
    pub fn wait_for(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.0;
        let mut guard = lock.lock().expect("lines lock");
        loop {
            if let Some((t, l)) = guard.0.iter().find(|(_, l)| pred(l)) {
                return Some((*t, l.clone()));
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = cond
                .wait_timeout(guard, deadline - now)
                .expect("lines lock")
                .0;
        }
    }

    pub fn all(&self) -> Vec<String> {
        let (lock, _) = &*self.0;
        lock.lock()
            .expect("lines lock")
            .0
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }
}

/// A child with its stdout and stderr collected; killed if dropped while running.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: Lines,
    pub stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    pub started: Instant,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, c: &mut Command) -> Result<Proc> {
        let started = Instant::now();
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{}`", util::show(c)))?;
        let stdout = Lines::default();
        let stderr = Lines::default();
        let readers = vec![
            stdout
                .clone()
                .collect(child.stdout.take().expect("piped stdout")),
            stderr
                .clone()
                .collect(child.stderr.take().expect("piped stderr")),
        ];
        Ok(Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers,
            started,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes a line on its stdin and keeps it open, for more lines.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        if let Some(stdin) = self.stdin.as_mut() {
            writeln!(stdin, "{line}").with_context(|| format!("writing to {}", self.name))?;
        }
        Ok(())
    }

    /// Writes a line on its stdin and closes it.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            writeln!(stdin, "{line}").with_context(|| format!("writing to {}", self.name))?;
        }
        Ok(())
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
    }

    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits for it to exit (killing it after `timeout`) and for its output to be read.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() >= deadline {
                self.signal("KILL");
                let status = self.child.wait()?;
                self.status = Some(status);
                self.join();
                bail!(
                    "{} did not exit within {:.0} s (killed); stderr: {}",
                    self.name,
                    timeout.as_secs_f64(),
                    tail(&self.stderr.text())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.join();
        Ok(self.status.expect("exited"))
    }

    /// When it exited, to within a few ms (call after `wait`).
    fn join(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Sends SIGINT and waits; the time from the signal to the exit.
    pub fn interrupt(&mut self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let t = Instant::now();
        self.signal("INT");
        let status = self.wait(timeout)?;
        Ok((status, t.elapsed()))
    }

    /// Waits for a line on stdout or stderr that `pred` accepts; an error (with its stderr)
    /// if the process exits or the time runs out first.
    pub fn expect_line(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool + Copy,
        timeout: Duration,
    ) -> Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let step = Duration::from_millis(20);
            if let Some(hit) = self.stdout.wait_for(pred, Duration::ZERO) {
                return Ok(hit);
            }
            if let Some(hit) = self.stderr.wait_for(pred, step) {
                return Ok(hit);
            }
            let exited = {
                let (lock, _) = &*self.stdout.0;
                lock.lock().expect("lines lock").1
            };
            if exited {
                // The line may have come just before the end of output: look once more.
                if let Some(hit) = self
                    .stdout
                    .wait_for(pred, Duration::ZERO)
                    .or_else(|| self.stderr.wait_for(pred, Duration::from_millis(100)))
                {
                    return Ok(hit);
                }
            }
            if exited || Instant::now() >= deadline {
                bail!(
                    "{}: no {what} ({}); stderr: {}",
                    self.name,
                    if exited { "it exited" } else { "timed out" },
                    tail(&self.stderr.text())
                );
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            self.signal("KILL");
            let _ = self.child.wait();
        }
    }
}

/// The last few hundred characters of a text, for error messages.
pub fn tail(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = chars.len().saturating_sub(600);
    chars[start..]
        .iter()
        .collect::<String>()
        .replace('\n', " | ")
}

/// CPU time a process's threads have run so far, in ns, from /proc/PID/task/*/schedstat
/// (/proc/PID/stat counts in 10 ms ticks, too coarse for a few seconds).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Peak resident memory (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs a command under GNU time: (wall seconds, peak RSS in KiB). Its stdout is discarded.
/// The wall time is measured here (GNU time rounds it to 10 ms).
pub fn time_command(c: &mut Command) -> Result<(f64, u64)> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        bail!("/usr/bin/time (Debian package `time`) is missing");
    }
    let mut t = util::cmd(time);
    t.args(["-f", "goprobe-bench-time %e %M"])
        .arg(c.get_program())
        .args(c.get_args())
        .stdout(Stdio::null());
    let start = Instant::now();
    let out = t.output()?;
    let wall = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("`{}` failed: {}", util::show(c), tail(&stderr));
    }
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("goprobe-bench-time "))
        .context("no timing line from /usr/bin/time")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("no RSS from /usr/bin/time")?
        .parse()?;
    Ok((wall, kib))
}

//! Renderings of one interval's histograms: bcc funclatency's text layout, and JSON lines.
pub mod flamegraph;
pub mod http;
pub mod json;
pub mod pprof;
pub mod prometheus;
pub use goprobe_input::query_string;
pub mod stacktext;
pub mod symbols;
pub mod tables;
pub mod text;

use std::{path::Path, time::SystemTime};

use crate::pipeline::{Latencies, Unit};

/// Check, before any work, that an output file can be written: a profile sampled for a minute
/// must not be lost to a typo in `-o`. The file is opened for writing without truncating it
/// (and removed again if this created it); non-blocking, so a FIFO without a reader is an
/// error rather than a wait.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let existed = path.symlink_metadata().is_ok();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            let e = e.to_string();
            let e = e.split(" (os error").next().unwrap_or(&e).to_string();
            anyhow::anyhow!("cannot write {}: {e}", path.display())
        })?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// One calling stack of a latency report: the callers (innermost first, the traced function
/// itself left out) and the latencies of the calls that returned to them.
#[derive(Debug, Clone)]
pub struct StackRow {
    pub stack: goprobe_inspect::symbolize::Stack,
    pub latencies: crate::pipeline::by_stack::StackLatencies,
}

/// One histogram to print: a function (or, without -F, all matched functions) in one process.
#[derive(Debug)]
pub struct Row {
    pub function: String,
    pub pid: u32,
    pub latencies: Latencies,
    /// Calls of this row seen but not timed (ring buffer full, pairing capacity, returns of
    /// calls that began before goprobe attached).
    pub misses: goprobe_common::Misses,
    /// `--stacks`: latency per calling stack, slowest first (None without --stacks).
    pub stacks: Option<Vec<crate::outputs::StackRow>>,
    /// How the function is probed: its own code (entry and RETs) and/or inlined copies. `None`
    /// for a row that merges several functions.
    pub sites: Option<FunctionSites>,
    /// When the probes covering this process were in place: calls it made before are not
    /// counted. (Host-wide and -p: its own; -b: the binary's.)
    pub attached: Option<SystemTime>,
    /// Host-wide: whether that was the process's start (every call it made is counted).
    pub from_start: Option<bool>,
    /// `--split`: the calls' time by state (None without --split).
    pub split: Option<crate::pipeline::split::Split>,
    /// `--by`, packs: the argument values of this row's calls, (name, value).
    pub by: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionSites {
    pub out_of_line: bool,
    pub inlined_copies: usize,
}

/// What one interval (or the whole run, without -i) produced.
#[derive(Debug)]
pub struct Report {
    pub rows: Vec<Row>,
    pub unit: Unit,
    pub time: SystemTime,
    /// Print the time before the histograms (-T).
    pub show_time: bool,
    /// Length of the interval that this report covers, in seconds.
    pub interval_s: f64,
    /// Calls seen but not timed in this interval over all functions: events lost (ring buffer
    /// full), entries not recorded (pairing maps full), returns without a recorded entry. Counted,
    /// never mis-paired.
    pub missed: goprobe_common::Misses,
    /// `--slower-than`: stacks were kept only for calls at least this slow (ns).
    pub stacks_min_ns: Option<u64>,
}

/// `HH:MM:SS` in local time, like bcc's `strftime("%H:%M:%S")`.
pub fn clock_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as libc::time_t;
    // SAFETY: localtime_r writes into the provided struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// `HH:MM:SS.mmm` in local time: when something happened, to the millisecond.
pub fn clock_time_ms(time: SystemTime) -> String {
    let millis = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    format!("{}.{millis:03}", clock_time(time))
}

#[cfg(test)]
mod check_tests {
    use super::*;

    /// `profile -o /nonexistent/x` failed only after sampling; the check says so at once, and
    /// leaves no file behind when it passes.
    #[test]
    fn output_paths_are_checked_before_work() {
        let e = check_writable(Path::new("/nonexistent/x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot write /nonexistent/x: No such file or directory"
        );
        let e = check_writable(Path::new("/")).unwrap_err();
        assert!(e.to_string().starts_with("cannot write /: "), "{e}");
        let path = std::env::temp_dir().join(format!("goprobe-check-{}", std::process::id()));
        check_writable(&path).unwrap();
        assert!(!path.exists(), "the check must not leave a file");
        std::fs::write(&path, "kept").unwrap();
        check_writable(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");
        std::fs::remove_file(&path).unwrap();
    }
}

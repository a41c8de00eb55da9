//! The kernel programs' log: the rare conditions they meet (a full map, a `g` whose stack
//! cannot be read, a stack position out of range; goprobe-ebpf/src/log.rs), on stderr at `-v`.
//!
//! Off by default, and then free: every loader sets the programs' `AYA_LOG_LEVEL` to 0, a
//! constant the verifier folds, so no log statement is even loaded, and shrinks their log ring
//! buffer to one page. The counters behind each condition are reported either way; the log adds
//! which process and function.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;

/// aya-log's ring buffer in the programs.
const LOG_MAP: &str = "AYA_LOGS";
/// The programs' log level, patched at load time.
const LOG_LEVEL: &str = "AYA_LOG_LEVEL";
/// aya-log's numbering: 0 is off, 1 error ... 4 debug, 5 trace.
const OFF: u8 = 0;
const DEBUG: u8 = 4;
/// A ring buffer is a power-of-two number of pages: one page when nothing is written to it.
const ONE_PAGE: u32 = 4096;
/// The log's ring buffer at `-v`.
const LOG_BYTES: u32 = 1 << 20;
/// A full map can be hit on every call: past this many lines a second the rest are counted.
const LINES_PER_SECOND: u32 = 20;

static ON: AtomicBool = AtomicBool::new(false);
/// The logs of every loaded object, read by [`flush`]. An object loaded and dropped again (the
/// agent's reloads) leaves its log here: a few pages, and only at `-v`.
static LOGS: Mutex<Vec<EbpfLogger<Stderr>>> = Mutex::new(Vec::new());

/// Function names by the number the programs know them by, to name them in the log.
static FUNCTION_NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Name function number `id` in the log's lines (the engine registers each function it traces).
pub fn name_function(id: u32, name: &str) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let mut names = FUNCTION_NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let id = id as usize;
    if names.len() <= id {
        names.resize(id + 1, String::new());
    }
    names[id] = name.to_owned();
}

/// `line` with `function #N` replaced by `function NAME (#N)` where the name is known.
fn with_names(line: &str, names: &[String]) -> String {
    const MARK: &str = "function #";
    let Some(at) = line.find(MARK) else {
        return line.to_owned();
    };
    let digits = &line[at + MARK.len()..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    match digits[..end]
        .parse::<usize>()
        .ok()
        .and_then(|id| names.get(id))
    {
        Some(name) if !name.is_empty() => format!(
            "{}function {name} (#{}){}",
            &line[..at],
            &digits[..end],
            &digits[end..]
        ),
        _ => line.to_owned(),
    }
}

/// Show the kernel programs' log (`-v`); before anything is loaded.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// The programs' log level and log buffer, for a loader.
pub fn configure(loader: &mut EbpfLoader<'_>) {
    if ON.load(Ordering::Relaxed) {
        loader.override_global(LOG_LEVEL, &DEBUG, true);
        // Room for a burst (a map filling logs every call until it drains): aya-log's 128 KiB
        // hold about a thousand lines.
        loader.map_max_entries(LOG_MAP, LOG_BYTES);
    } else {
        loader.override_global(LOG_LEVEL, &OFF, true);
        loader.map_max_entries(LOG_MAP, ONE_PAGE);
    }
}

/// Start reading the log of an object just loaded (at `-v`).
pub fn start(ebpf: &mut Ebpf) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    match EbpfLogger::init_with_logger(ebpf, Stderr) {
        Ok(log) => LOGS.lock().unwrap_or_else(|e| e.into_inner()).push(log),
        Err(e) => eprintln!("goprobe: the kernel programs' log cannot be read: {e}"),
    }
}

/// Print what the programs logged since the last call (the engine calls it every scan).
pub fn flush() {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    for log in LOGS.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
        log.flush();
    }
    let held_back = std::mem::take(&mut RATE.lock().unwrap_or_else(|e| e.into_inner()).held_back);
    if held_back > 0 {
        eprintln!("goprobe: kernel: {held_back} more lines not shown");
    }
}

/// Writes each record as one `goprobe: kernel: ...` line, at most [`LINES_PER_SECOND`].
struct Stderr;

/// The lines shown this second, and those held back since the last [`flush`].
static RATE: Mutex<Rate> = Mutex::new(Rate {
    second: None,
    shown: 0,
    held_back: 0,
});

#[derive(Default)]
struct Rate {
    second: Option<u64>,
    shown: u32,
    held_back: u64,
}

impl Rate {
    /// Whether a line may be shown at `second` (seconds since start); if not, it is counted.
    fn admit(&mut self, second: u64) -> bool {
        if self.second != Some(second) {
            self.second = Some(second);
            self.shown = 0;
        }
        if self.shown < LINES_PER_SECOND {
            self.shown += 1;
            true
        } else {
            self.held_back += 1;
            false
        }
    }
}

fn seconds_since_start() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let show = RATE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(seconds_since_start());
        if show {
            let line = record.args().to_string();
            let names = FUNCTION_NAMES.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("goprobe: kernel: {}", with_names(&line, &names));
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_rate_are_counted() {
        let mut rate = Rate::default();
        for _ in 0..LINES_PER_SECOND {
            assert!(rate.admit(7));
        }
        assert!(!rate.admit(7));
        assert!(!rate.admit(7));
        assert!(rate.admit(8));
        assert_eq!(rate.held_back, 2);
    }

    #[test]
    fn function_numbers_are_named_when_known() {
        let names = vec!["main.a".to_owned(), String::new()];
        assert_eq!(
            with_names("a call of function #0 in PID 7 is not timed", &names),
            "a call of function main.a (#0) in PID 7 is not timed"
        );
        assert_eq!(
            with_names("a call of function #1 in PID 7", &names),
            "a call of function #1 in PID 7"
        );
        assert_eq!(with_names("function #9", &names), "function #9");
        assert_eq!(with_names("function #", &names), "function #");
        assert_eq!(with_names("no function", &names), "no function");
    }
}

//! Which processes to trace: explicit PIDs, a binary, or every process on the host, found through
//! /proc. A process's binary is identified by (device, inode), so copies of the same file run by
//! many processes, or seen through different paths and mount namespaces, are inspected once.
//! Host-wide, new processes also come from the kernel's exec events ([`ExecWatch`]).
use std::{
    collections::HashMap,
    fs, io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use goprobe_common::ExecEvent;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with PID {0} (check the PID with `ps`)")]
    NoSuchProcess(u32),
    #[error("cannot read the executable of PID {pid}: {source} (run goprobe as root)")]
    Unreadable { pid: u32, source: io::Error },
    #[error("PID {0} has no executable (a kernel thread?)")]
    NoExecutable(u32),
}

/// Identity of a binary file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinaryKey {
    pub dev: u64,
    pub ino: u64,
}

impl BinaryKey {
    pub fn of(path: &Path) -> io::Result<Self> {
        let meta = fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// A process's executable, held open: the file stays readable, and its probes attachable through
/// [`OpenExe::path`], after the process exits (host-wide tracing sees a process once and may
/// attach a moment later, when a short-lived one is gone).
#[derive(Debug)]
pub struct OpenExe {
    file: fs::File,
    pub binary: BinaryKey,
}

impl OpenExe {
    pub fn of(pid: u32) -> io::Result<Self> {
        let file = fs::File::open(format!("/proc/{pid}/exe"))?;
        let meta = file.metadata()?;
        Ok(Self {
            file,
            binary: BinaryKey {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// A path to this very file for as long as it is held open: `/proc/self/fd/N`, which the
    /// kernel follows when it attaches uprobes.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// A running process and its executable.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    /// `/proc/PID/exe`: opens the very file the process runs, even inside a container's mount
    /// namespace or after the file was replaced on disk; uprobes can be attached through it.
    pub exe: PathBuf,
    /// Where the binary lives, as the process sees it (for messages).
    pub exe_name: PathBuf,
    pub binary: BinaryKey,
}

impl Process {
    pub fn get(pid: u32) -> Result<Self, TargetError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() || is_thread_not_process(pid) {
            return Err(TargetError::NoSuchProcess(pid));
        }
        let exe = proc_dir.join("exe");
        let exe_name = match fs::read_link(&exe) {
            Ok(path) => path,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TargetError::NoExecutable(pid));
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(TargetError::Unreadable { pid, source: e });
            }
            Err(_) if !proc_dir.exists() => return Err(TargetError::NoSuchProcess(pid)),
            Err(e) => return Err(TargetError::Unreadable { pid, source: e }),
        };
        let binary = BinaryKey::of(&exe).map_err(|source| {
            if proc_dir.exists() {
                TargetError::Unreadable { pid, source }
            } else {
                TargetError::NoSuchProcess(pid)
            }
        })?;
        Ok(Self {
            pid,
            exe,
            exe_name,
            binary,
        })
    }
}

/// /proc/N exists for thread IDs too; a TID is not a process to trace.
fn is_thread_not_process(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("Tgid:")
                    .map(|v| v.trim().parse::<u32>().ok())
            })
        })
        .flatten()
        .is_some_and(|tgid| tgid != pid)
}

/// Every process ID on the host, except goprobe's own.
pub fn all_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != me)
        .collect();
    pids.sort_unstable();
    pids
}

/// What `/proc/PID/stat` says about a live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Start time in clock ticks since boot: tells a process from a later one with its PID.
    pub start: u64,
    pub comm: String,
    /// Exited, not yet reaped by its parent: no longer running anything.
    pub zombie: bool,
}

pub fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut stat = parse_stat(&text)?;
    // The main thread's state is the process's in /proc/PID/stat; it shows as a zombie while
    // the process still runs other threads (see [`threads`]).
    stat.zombie = stat.zombie && threads(pid) <= 1;
    Some(stat)
}

pub fn parse_stat(text: &str) -> Option<Stat> {
    // "PID (comm) S ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after comm start at field 3 (state); starttime is field 22.
    let mut fields = text.get(close + 1..)?.split_whitespace();
    let state = fields.next()?;
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat {
        start,
        comm,
        zombie: matches!(state, "Z" | "X"),
    })
}

/// How host-wide discovery last saw a process: its start time and the file it ran (none for
/// kernel threads, or while it is in the middle of an exec).
pub type Sighting = (u64, Option<BinaryKey>);

/// Whether `pid` is a process not seen before, or not as it is now: a new PID, a PID now held
/// by a later process (PIDs are reused), or a process that exec'd since (same PID and start
/// time, another file: a scan can catch a new process between fork and exec, running its
/// parent's binary, or in the middle of the exec, with no executable at all). Records it in
/// `seen`.
pub fn first_sight(seen: &mut HashMap<u32, Sighting>, pid: u32) -> bool {
    let start = stat(pid).map_or(0, |s| s.start);
    let binary = BinaryKey::of(Path::new(&format!("/proc/{pid}/exe"))).ok();
    sighted(seen, pid, (start, binary))
}

/// [`first_sight`] of a process whose start and binary are known already.
pub fn sighted(seen: &mut HashMap<u32, Sighting>, pid: u32, sighting: Sighting) -> bool {
    seen.insert(pid, sighting) != Some(sighting)
}

/// Whether the process that [`stat`] saw start at `start` still runs (not exited, not a zombie).
pub fn is_running(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start == start && !s.zombie)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the provided struct.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now on CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()` and so of exec events.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The wall-clock time of an instant on CLOCK_MONOTONIC.
pub fn wall_time(monotonic: u64) -> SystemTime {
    let (now, mono) = (SystemTime::now(), monotonic_ns());
    if monotonic <= mono {
        now - Duration::from_nanos(mono - monotonic)
    } else {
        now + Duration::from_nanos(monotonic - mono)
    }
}

/// When a process started, on CLOCK_MONOTONIC, from [`Stat::start`] (clock ticks since boot,
/// suspended time included: CLOCK_BOOTTIME).
pub fn start_monotonic_ns(start_ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        hz if hz > 0 => hz as u64,
        _ => 100,
    };
    let boottime = start_ticks.saturating_mul(1_000_000_000) / hz;
    let suspended = clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(monotonic_ns());
    boottime.saturating_sub(suspended)
}

/// A process that just ran a new program, as [`ExecWatch`] saw it at once.
#[derive(Debug)]
pub struct Exec {
    pub pid: u32,
    /// The thread that called exec, numbered as before it (`pid`: the main thread).
    pub old_tid: u32,
    /// When it exec'd, on CLOCK_MONOTONIC.
    pub ktime_ns: u64,
    /// Its command name, from the kernel (for messages when `exe` failed).
    pub comm: String,
    pub stat: Option<Stat>,
    /// Its executable, opened within moments of the exec; an error if the process was gone.
    pub exe: io::Result<OpenExe>,
    /// Where the executable lives, as the process sees it (for messages).
    pub exe_name: Option<PathBuf>,
}

/// The kernel's exec events (`Kernel::watch_execs`): every process that runs a
/// new program, as it happens. A thread of its own waits for them (the ring buffer wakes it:
/// exec is rare) and opens each new process's executable right away, whatever the tracer is
/// busy with (inspecting a large binary, attaching), so that a process living a few
/// milliseconds still gives its binary.
pub struct ExecWatch {
    execs: tokio::sync::mpsc::UnboundedReceiver<Exec>,
}

/// How long the watch thread waits for events before checking whether it is still wanted.
const EXEC_POLL_MS: i32 = 200;

impl ExecWatch {
    pub fn start(ring: RingBuf<MapData>) -> io::Result<Self> {
        let (sender, execs) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("goprobe-execs".into())
            .spawn(move || watch_execs(ring, &sender))?;
        Ok(Self { execs })
    }

    /// The processes seen so far, without waiting.
    pub fn ready(&mut self) -> Vec<Exec> {
        let mut execs = Vec::new();
        while let Ok(exec) = self.execs.try_recv() {
            execs.push(exec);
        }
        execs
    }

    /// Wait for new processes (`None`: the watch thread has ended).
    pub async fn next(&mut self) -> Option<Vec<Exec>> {
        let first = self.execs.recv().await?;
        let mut execs = vec![first];
        execs.extend(self.ready());
        Some(execs)
    }
}

fn watch_execs(mut ring: RingBuf<MapData>, sender: &tokio::sync::mpsc::UnboundedSender<Exec>) {
    let me = std::process::id();
    while !sender.is_closed() {
        let mut poll = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, EXEC_POLL_MS) } < 0
            && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
        {
            return;
        }
        while let Some(item) = ring.next() {
            if item.len() < size_of::<ExecEvent>() {
                continue;
            }
            // SAFETY: the kernel side writes exactly an ExecEvent; read_unaligned copes with the
            // ring buffer's 8-byte record alignment.
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ExecEvent>()) };
            drop(item);
            if event.tgid == me {
                continue;
            }
            let pid = event.tgid;
            let end = event.comm.iter().position(|&b| b == 0).unwrap_or(16);
            let exec = Exec {
                pid,
                old_tid: event.old_tid,
                ktime_ns: event.ktime_ns,
                comm: String::from_utf8_lossy(&event.comm[..end]).into_owned(),
                stat: stat(pid),
                exe: OpenExe::of(pid),
                exe_name: fs::read_link(format!("/proc/{pid}/exe")).ok(),
            };
            if sender.send(exec).is_err() {
                return;
            }
        }
    }
}

/// Whether `pid` still runs: it exists and is not a zombie (exited, waiting for its parent to
/// reap it, which may never happen: goprobe itself can be the parent, as PID 1 of a namespace).
pub fn is_alive(pid: u32) -> bool {
    // Signal 0 checks existence; EPERM still means the process exists.
    // SAFETY: kill with signal 0 sends nothing.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !stat(pid).is_some_and(|s| s.zombie)
}

/// A process held by a pidfd, to tell when it has exited. Unlike a look at /proc, which sees the
/// main thread as a zombie for a moment while another thread execs, the pidfd follows the process
/// through its execs and reports only its real end (Linux 5.3; [`is_alive`] before).
pub struct Watched {
    pid: u32,
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl Watched {
    pub fn new(pid: u32) -> Self {
        // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: the fd was just returned to us and nothing else owns it.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) }
        });
        Self { pid, pidfd }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn exited(&self) -> bool {
        let Some(fd) = &self.pidfd else {
            return !is_alive(self.pid);
        };
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait. A pidfd is readable once the process has exited.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & (libc::POLLIN | libc::POLLHUP) != 0
    }
}

/// The threads of a process. A process whose main thread shows as a zombie still runs while it
/// has others: the main thread ended alone, or another thread is in `exec` (which ends every
/// other thread, then takes the PID over) and the process is about to start its new program.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.start, s.comm.as_str(), s.zombie),
            (123456, "a (b) c", false)
        );
        let line = "42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 99 0 0";
        assert!(parse_stat(line).unwrap().zombie);
        assert!(stat(std::process::id()).unwrap().start > 0);
    }

    #[test]
    fn reused_pids_are_seen_again() {
        let me = std::process::id();
        let mut seen = HashMap::new();
        assert!(first_sight(&mut seen, me));
        assert!(!first_sight(&mut seen, me));
        // Another process got this PID: another start time.
        seen.get_mut(&me).unwrap().0 += 1;
        assert!(first_sight(&mut seen, me));
        // Caught between fork and exec (the parent's file) or mid-exec (none): seen again once
        // it runs its own binary.
        seen.get_mut(&me).unwrap().1 = None;
        assert!(first_sight(&mut seen, me));
        assert!(!first_sight(&mut seen, me));
    }

    #[test]
    fn open_exe_reaches_the_same_file() {
        let exe = OpenExe::of(std::process::id()).unwrap();
        assert_eq!(exe.binary, BinaryKey::of(&exe.path()).unwrap());
        assert_eq!(
            exe.binary,
            BinaryKey::of(&std::env::current_exe().unwrap()).unwrap()
        );
        assert!(OpenExe::of(u32::MAX - 1).is_err());
    }

    #[test]
    fn clocks_agree() {
        // This process started before now, and not long before (within the test run).
        let started = start_monotonic_ns(stat(std::process::id()).unwrap().start);
        let now = monotonic_ns();
        assert!(started <= now + 20_000_000, "{started} > {now}");
        let age = SystemTime::now()
            .duration_since(wall_time(started))
            .unwrap_or_default();
        assert!(age < Duration::from_secs(3600), "{age:?}");
        let later = wall_time(now + 1_000_000_000);
        let ahead = later.duration_since(SystemTime::now()).unwrap();
        assert!(ahead > Duration::from_millis(900), "{ahead:?}");
    }

    #[test]
    fn finds_itself_and_rejects_missing() {
        let me = Process::get(std::process::id()).unwrap();
        assert_eq!(
            me.binary,
            BinaryKey::of(&std::env::current_exe().unwrap()).unwrap()
        );
        assert!(matches!(
            Process::get(0),
            Err(TargetError::NoSuchProcess(0))
        ));
        assert!(matches!(
            Process::get(u32::MAX - 1),
            Err(TargetError::NoSuchProcess(_))
        ));
        assert!(is_alive(std::process::id()));
        assert!(!all_pids().contains(&std::process::id()));
    }
}

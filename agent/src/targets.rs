//! Which processes to trace: explicit PIDs, a binary, or every process on the host, found through
//! /proc. A process's binary is identified by (device, inode), so copies of the same file run by
//! many processes, or seen through different paths and mount namespaces, are inspected once.
use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

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
    parse_stat(&text)
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
    seen.insert(pid, (start, binary)) != Some((start, binary))
}

/// Every process running now, as [`first_sight`] records them. Taken before the first look at
/// the processes, so that one starting afterwards is found by the next scan.
pub fn sight_all() -> HashMap<u32, Sighting> {
    let mut seen = HashMap::new();
    for pid in all_pids() {
        first_sight(&mut seen, pid);
    }
    seen
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

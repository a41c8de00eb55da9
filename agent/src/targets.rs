//! Which processes to trace: explicit PIDs, a binary, or every process on the host, found through
//! /proc. A process's binary is identified by (device, inode), so copies of the same file run by
//! many processes, or seen through different paths and mount namespaces, are inspected once.
use std::{
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

pub fn is_alive(pid: u32) -> bool {
    // Signal 0 checks existence; EPERM still means the process exists.
    // SAFETY: kill with signal 0 sends nothing.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if rc == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

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

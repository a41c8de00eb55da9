//! Processes the agent cannot inspect, and the permission that is missing.
//!
//! Inspecting a process takes two permissions: following `/proc/PID/exe` (the kernel's ptrace
//! read check: another user's process, or one with capabilities the agent lacks, needs
//! CAP_SYS_PTRACE) and reading the binary (one that is not world-readable needs
//! CAP_DAC_READ_SEARCH). With the capability held, a refusal comes from a security module such
//! as AppArmor, whose default container profiles deny both. A process refused is never silently
//! left out: it is counted by reason (`goprobe_agent_processes_not_inspectable_total`) and
//! logged once.
use std::{fs, io, sync::OnceLock};

/// Why a process could not be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Denied {
    /// `/proc/PID/exe` refused, and the agent lacks CAP_SYS_PTRACE.
    SysPtrace,
    /// The binary refused, and the agent lacks CAP_DAC_READ_SEARCH.
    DacReadSearch,
    /// Refused although the agent has the capability: AppArmor, SELinux, or a user namespace.
    Lsm,
}

impl Denied {
    pub const ALL: [Denied; 3] = [Denied::SysPtrace, Denied::DacReadSearch, Denied::Lsm];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Denied::SysPtrace => "CAP_SYS_PTRACE",
            Denied::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Denied::Lsm => "lsm",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Denied::SysPtrace => {
                "the agent lacks CAP_SYS_PTRACE, which reading another user's (or a more \
                 privileged) process needs"
            }
            Denied::DacReadSearch => {
                "the agent lacks CAP_DAC_READ_SEARCH, which reading a binary that is not \
                 world-readable needs"
            }
            Denied::Lsm => {
                "the agent has the capabilities, so a security module (AppArmor, SELinux) or a \
                 user namespace refused it: run the agent unconfined (see the README's \
                 Kubernetes section)"
            }
        }
    }
}

/// Whether the agent may inspect process `pid`: `None` if it may (or the process is gone, or
/// has no executable), else what refused it and a line that says so.
pub fn check(pid: u32) -> Option<(Denied, String)> {
    // The kernel checks the permission before it finds that a kernel thread has no executable.
    if is_kernel_thread(pid) {
        return None;
    }
    let exe = format!("/proc/{pid}/exe");
    let refused = |e: &io::Error| {
        e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EPERM)
    };
    let (denied, what, error) = match fs::read_link(&exe) {
        Err(e) if refused(&e) => {
            let denied = if has(CAP_SYS_PTRACE) {
                Denied::Lsm
            } else {
                Denied::SysPtrace
            };
            (denied, format!("reading {exe}"), e)
        }
        Err(_) => return None,
        Ok(_) => match fs::File::open(&exe) {
            Err(e) if refused(&e) => {
                let denied = if has(CAP_DAC_READ_SEARCH) || has(CAP_DAC_OVERRIDE) {
                    Denied::Lsm
                } else {
                    Denied::DacReadSearch
                };
                (denied, format!("opening {exe}"), e)
            }
            _ => return None,
        },
    };
    Some((denied, format!("{what}: {error}: {}", denied.remedy())))
}

/// Count a process refused (in `counts`, by reason label) and say so, once per process: the
/// caller looks at each process once.
pub fn report(counts: &mut [(&'static str, u64)], pid: u32, comm: &str, refused: (Denied, String)) {
    let (denied, why) = refused;
    if let Some(count) = counts.iter_mut().find(|c| c.0 == denied.label()) {
        count.1 += 1;
    }
    eprintln!("goprobe: cannot inspect PID {pid} ({comm}): {why}");
}

/// PF_KTHREAD in the flags of /proc/PID/stat (readable without any permission).
fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After "PID (comm) ": state, ppid, pgrp, session, tty_nr, tpgid, flags.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;

/// Whether the agent holds `cap` (effective), from /proc/self/status, read once; if that cannot
/// be read, it is assumed held (the refusal is then blamed on a security module).
fn has(cap: u32) -> bool {
    static EFFECTIVE: OnceLock<u64> = OnceLock::new();
    let effective = EFFECTIVE.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX)
    });
    effective & (1 << cap) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_inspectable() {
        assert_eq!(check(std::process::id()), None);
        // No such process: nothing to report.
        assert_eq!(check(u32::MAX), None);
        assert!(!is_kernel_thread(std::process::id()));
        // kthreadd is PID 2 in the initial PID namespace.
        let comm = fs::read_to_string("/proc/2/comm").unwrap_or_default();
        assert_eq!(is_kernel_thread(2), comm.trim() == "kthreadd");
    }

    #[test]
    fn labels_name_the_permission() {
        let labels: Vec<&str> = Denied::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels, ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "lsm"]);
        assert!(Denied::Lsm.remedy().contains("AppArmor"));
    }
}

//! Where `funclatency --split` probes the Go runtime, and how it reads wait reasons.
//!
//! The sites are the entries of `runtime.casgstatus`, `gopark`, `reentersyscall`,
//! `exitsyscall` and `cgocall` (goprobe-ebpf/src/split.rs says what each gives). Their
//! arguments are read from registers, so only an entry where they are still there is used: the
//! stack-check branch or the first instruction; found through `.gopclntab`, so stripped binaries
//! work.
//!
//! `gopark`'s `reason` is a `waitReason`, an enum whose values differ between Go versions. Each
//! table below is the enum of one Go version, in order, copied from that version's
//! `src/runtime/runtime2.go`; the test `tables_match_the_toolchains` reads the file of every Go
//! toolchain installed (`cargo xtask setup`) and checks the table of its version. A binary of a
//! Go version without a table has its parked time in `parked_other`, and goprobe says so.
use goprobe_common::split::{self, site};

use crate::inspect::{BinaryIndex, EntryKind};

/// `waitReason` names (without the `waitReason` prefix) in enum order, per Go minor version.
const WAIT_REASONS: &[(u32, &[&str])] = &[
    (
        19,
        &[
            "Zero",
            "GCAssistMarking",
            "IOWait",
            "ChanReceiveNilChan",
            "ChanSendNilChan",
            "DumpingHeap",
            "GarbageCollection",
            "GarbageCollectionScan",
            "PanicWait",
            "Select",
            "SelectNoCases",
            "GCAssistWait",
            "GCSweepWait",
            "GCScavengeWait",
            "ChanReceive",
            "ChanSend",
            "FinalizerWait",
            "ForceGCIdle",
            "Semacquire",
            "Sleep",
            "SyncCondWait",
            "TimerGoroutineIdle",
            "TraceReaderBlocked",
            "WaitForGCCycle",
            "GCWorkerIdle",
            "Preempted",
            "DebugCall",
        ],
    ),
    (
        21,
        &[
            "Zero",
            "GCAssistMarking",
            "IOWait",
            "ChanReceiveNilChan",
            "ChanSendNilChan",
            "DumpingHeap",
            "GarbageCollection",
            "GarbageCollectionScan",
            "PanicWait",
            "Select",
            "SelectNoCases",
            "GCAssistWait",
            "GCSweepWait",
            "GCScavengeWait",
            "ChanReceive",
            "ChanSend",
            "FinalizerWait",
            "ForceGCIdle",
            "Semacquire",
            "Sleep",
            "SyncCondWait",
            "SyncMutexLock",
            "SyncRWMutexRLock",
            "SyncRWMutexLock",
            "TraceReaderBlocked",
            "WaitForGCCycle",
            "GCWorkerIdle",
            "GCWorkerActive",
            "Preempted",
            "DebugCall",
            "GCMarkTermination",
            "StoppingTheWorld",
        ],
    ),
    (
        27,
        &[
            "Zero",
            "GCAssistMarking",
            "IOWait",
            "DumpingHeap",
            "GarbageCollection",
            "GarbageCollectionScan",
            "PanicWait",
            "GCAssistWait",
            "GCSweepWait",
            "GCScavengeWait",
            "FinalizerWait",
            "ForceGCIdle",
            "UpdateGOMAXPROCSIdle",
            "Semacquire",
            "Sleep",
            "ChanReceiveNilChan",
            "ChanSendNilChan",
            "SelectNoCases",
            "Select",
            "ChanReceive",
            "ChanSend",
            "SyncCondWait",
            "SyncMutexLock",
            "SyncRWMutexRLock",
            "SyncRWMutexLock",
            "SyncWaitGroupWait",
            "TraceReaderBlocked",
            "WaitForGCCycle",
            "GCWorkerIdle",
            "GCWorkerActive",
            "Preempted",
            "DebugCall",
            "GCMarkTermination",
            "StoppingTheWorld",
            "FlushProcCaches",
            "TraceGoroutineStatus",
            "TraceProcStatus",
            "PageTraceFlush",
            "Coroutine",
            "GCWeakToStrongWait",
            "SynctestRun",
            "SynctestWait",
            "SynctestChanReceive",
            "SynctestChanSend",
            "SynctestSelect",
            "SynctestWaitGroupWait",
            "CleanupWait",
        ],
    ),
];

/// The state a wait reason's time goes to.
fn state_of(reason: &str) -> u32 {
    match reason {
        "ChanReceive" | "ChanReceiveNilChan" | "SynctestChanReceive" => split::CHAN_RECEIVE,
        "ChanSend" | "ChanSendNilChan" | "SynctestChanSend" => split::CHAN_SEND,
        "Select" | "SelectNoCases" | "SynctestSelect" => split::SELECT,
        "SyncMutexLock" => split::SYNC_MUTEX,
        "SyncRWMutexRLock" | "SyncRWMutexLock" => split::SYNC_RWMUTEX,
        "SyncWaitGroupWait" | "SynctestWaitGroupWait" => split::SYNC_WAITGROUP,
        "SyncCondWait" => split::SYNC_COND,
        "Semacquire" => split::SEMACQUIRE,
        "IOWait" => split::IO_WAIT,
        "Sleep" => split::SLEEP,
        "GCAssistMarking"
        | "GCAssistWait"
        | "GCSweepWait"
        | "GCScavengeWait"
        | "WaitForGCCycle"
        | "GarbageCollection"
        | "GarbageCollectionScan"
        | "GCWorkerIdle"
        | "GCWorkerActive"
        | "GCMarkTermination"
        | "FinalizerWait"
        | "ForceGCIdle"
        | "GCWeakToStrongWait"
        | "CleanupWait" => split::GC,
        _ => split::PARKED_OTHER,
    }
}

/// Table 0 sends every reason to `parked_other` (a Go version without a table); table `i + 1`
/// is `WAIT_REASONS[i]`. Written to the kernel's `SPLIT_REASONS` at load.
pub fn reason_tables() -> Vec<[u8; 256]> {
    let mut tables = vec![[split::PARKED_OTHER as u8; 256]];
    for (_, names) in WAIT_REASONS {
        let mut table = [split::PARKED_OTHER as u8; 256];
        for (value, name) in names.iter().enumerate() {
            table[value] = state_of(name) as u8;
        }
        tables.push(table);
    }
    tables
}

/// The Go minor version of `go1.NN[.P]`.
fn minor(go_version: &str) -> Option<u32> {
    let rest = go_version.strip_prefix("go1.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The split sites of one binary.
#[derive(Debug, Clone, Default)]
pub struct SplitPlan {
    /// (file offset, cookie) of each runtime site.
    pub sites: Vec<(u64, u64)>,
    /// What the split lacks in this binary, one sentence each (shown with -v and at the start).
    pub notes: Vec<String>,
}

pub fn plan_split(index: &BinaryIndex) -> SplitPlan {
    let mut plan = SplitPlan::default();
    let version = index.go_version.clone().unwrap_or_default();
    let table = match minor(&version)
        .and_then(|m| WAIT_REASONS.iter().position(|(minor, _)| *minor == m))
    {
        Some(i) => i as u64 + 1,
        None => {
            plan.notes.push(format!(
                "no wait-reason table for {}: its parked time is shown as parked_other",
                if version.is_empty() {
                    "an unknown Go version"
                } else {
                    &version
                }
            ));
            0
        }
    };
    let wanted = [
        ("runtime.casgstatus", site::CASGSTATUS),
        ("runtime.gopark", site::GOPARK),
        ("runtime.reentersyscall", site::ENTERSYSCALL),
        ("runtime.exitsyscall", site::EXITSYSCALL),
        ("runtime.cgocall", site::CGOCALL),
    ];
    for (name, kind) in wanted {
        let found = index.find(name).and_then(|f| index.probe_sites(f).ok());
        let offset = found
            .filter(|sites| {
                matches!(
                    sites.entry_kind,
                    EntryKind::StackCheckBranch | EntryKind::FunctionStart
                )
            })
            .and_then(|sites| index.vaddr_to_file_offset(sites.entry));
        match offset {
            Some(offset) => plan.sites.push((
                offset,
                goprobe_common::cookie::SPLIT | kind | (table << site::TABLE_SHIFT),
            )),
            // cgocall is linked only into cgo programs.
            None if kind == site::CGOCALL => {}
            None => plan.notes.push(format!(
                "{name} has no entry where its arguments can be read: status changes through it go to other"
            )),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `waitReason` constants of a runtime2.go, in order.
    fn enum_from_source(source: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut inside = false;
        for line in source.lines() {
            let line = line.trim();
            if line.starts_with("waitReasonZero ") {
                inside = true;
            }
            if !inside {
                continue;
            }
            if line == ")" {
                break;
            }
            if let Some(rest) = line.strip_prefix("waitReason") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                names.push(name);
            }
        }
        names
    }

    #[test]
    fn tables_match_the_toolchains() {
        let mut roots = vec![std::path::PathBuf::from("/usr/lib/go-1.19")];
        if let Some(home) = std::env::var_os("HOME") {
            let cache = std::path::Path::new(&home).join(".cache/goprobe/go");
            for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
                roots.push(entry.path().join("lib/python3.11/site-packages/go"));
            }
        }
        let mut checked = 0;
        for root in roots {
            let Ok(source) = std::fs::read_to_string(root.join("src/runtime/runtime2.go")) else {
                continue;
            };
            let Ok(version) = std::fs::read_to_string(root.join("VERSION")) else {
                continue;
            };
            let Some(m) = minor(version.trim()) else {
                continue;
            };
            let from_source = enum_from_source(&source);
            assert!(!from_source.is_empty(), "{}", root.display());
            match WAIT_REASONS.iter().find(|(minor, _)| *minor == m) {
                Some((_, table)) => {
                    assert_eq!(&from_source, table, "go1.{m} ({})", root.display());
                    checked += 1;
                }
                // A Go version without a table gets its parked time as parked_other (said when
                // goprobe attaches; the end-to-end split tests fail on it): here, what to add.
                None => eprintln!(
                    "note: go1.{m} is installed ({}) but has no wait-reason table; its enum is {from_source:?}",
                    root.display()
                ),
            }
        }
        assert!(checked > 0, "no Go toolchain found to check the tables");
    }

    #[test]
    fn tables_map_reasons() {
        let tables = reason_tables();
        assert_eq!(tables.len(), WAIT_REASONS.len() + 1);
        // go1.27: ChanReceive is 19, Sleep 14.
        let t27 = &tables[3];
        assert_eq!(u32::from(t27[19]), split::CHAN_RECEIVE);
        assert_eq!(u32::from(t27[14]), split::SLEEP);
        assert_eq!(minor("go1.19.8"), Some(19));
        assert_eq!(minor("go1.27rc1"), Some(27));
    }
}

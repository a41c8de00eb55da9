//! The agent's archive, kept working whatever happens to its file, so that tracing never stops
//! because of it:
//!
//! - a corrupt file (found at start-up by a full check, or later by any read or write) is
//!   renamed `<name>.corrupt-<UTC time>`, kept for inspection with `goprobe query --archive`, and
//!   a fresh archive starts at the configured path; `goprobe_agent_archive_corrupt_total` counts
//!   these;
//! - after an I/O error (a full disk), redb fails every later write until the database is opened
//!   again: the handle is closed, and reopened at the next interval's write until one succeeds.
//!   Writes that failed are counted (`goprobe_agent_archive_errors_total`); the log says when
//!   writes (of intervals, of profiles, or opening the file) start failing and when they work
//!   again, not at every interval.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::pipeline::archive::{Archive, ArchiveError, ProfileRecord, Record, Retention};

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
    corrupt_total: AtomicU64,
}

#[derive(Default)]
struct State {
    /// `None` while the archive cannot be opened (reopened at the next write).
    archive: Option<Arc<Archive>>,
    /// Why writes of each kind fail, while they do, and how many failed since the last that
    /// worked. Kept apart: on a full disk, the small interval writes may still fit where the
    /// profiles do not, and one state for both would flip at every interval.
    failing: BTreeMap<Kind, (String, u64)>,
}

/// What a write stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Opening the file (at start-up, or again after an error).
    Open,
    Intervals,
    Profiles,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Open => "open the archive",
            Kind::Intervals => "write intervals",
            Kind::Profiles => "write CPU profiles",
        }
    }
}

/// What `/api/v1/status` shows of the archive's health.
pub struct StoreStatus {
    pub corrupt_total: u64,
    pub failing: Option<String>,
}

impl Store {
    /// Open the archive at start-up, checked whole. A corrupt file is moved aside and a fresh
    /// archive started; a full disk leaves the agent running without an archive until space
    /// returns. Errors the user must fix (another agent holds the file, the path is not a redb
    /// file, the directory cannot be created) refuse the start.
    pub fn open(path: &Path) -> Result<Store, ArchiveError> {
        let store = Store {
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
            corrupt_total: AtomicU64::new(0),
        };
        {
            let mut state = store.state.lock().expect("archive lock");
            match Archive::open_checked(path) {
                Ok(archive) => state.archive = Some(Arc::new(archive)),
                Err(e @ ArchiveError::Corrupt { .. }) => {
                    if !looks_like_redb(path) {
                        return Err(ArchiveError::Db {
                            path: path.to_path_buf(),
                            message: format!(
                                "not a redb archive ({e}): refusing to move it aside; check archive.path"
                            ),
                        });
                    }
                    store.replace_corrupt(&mut state, &e);
                }
                Err(e @ ArchiveError::Io { .. }) if full(&e) => {
                    store.fail(&mut state, Kind::Open, &e)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(store)
    }

    pub fn corrupt_total(&self) -> u64 {
        self.corrupt_total.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> StoreStatus {
        let state = self.state.lock().expect("archive lock");
        StoreStatus {
            corrupt_total: self.corrupt_total(),
            failing: failing(&state),
        }
    }

    /// Write one interval's histograms (see [`Archive::write`]).
    pub fn write(&self, records: &[Record], retention: Retention) -> Result<(), ArchiveError> {
        self.writing(Kind::Intervals, |archive| archive.write(records, retention))
    }

    /// Write one interval's CPU profiles (see [`Archive::write_profiles`]).
    pub fn write_profiles(
        &self,
        records: &[ProfileRecord],
        retention: Retention,
    ) -> Result<(), ArchiveError> {
        self.writing(Kind::Profiles, |archive| {
            archive.write_profiles(records, retention)
        })
    }

    fn writing(
        &self,
        kind: Kind,
        write: impl Fn(&Archive) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        // Twice at most: a write that finds the file corrupt goes to the fresh archive.
        for _ in 0..2 {
            let archive = {
                let mut state = self.state.lock().expect("archive lock");
                if state.archive.is_none() {
                    self.reopen(&mut state);
                }
                match &state.archive {
                    Some(archive) => archive.clone(),
                    None => {
                        // Counted, not said again: opening it failed, and that was said.
                        let e = self.unavailable(&state);
                        state.failing.entry(kind).or_insert((e.to_string(), 0)).1 += 1;
                        return Err(e);
                    }
                }
            };
            // Outside the lock: the HTTP server reads meanwhile.
            let result = write(&archive);
            let mut state = self.state.lock().expect("archive lock");
            match result {
                Ok(()) => {
                    state.failing.remove(&Kind::Open);
                    if let Some((_, failed)) = state.failing.remove(&kind) {
                        eprintln!(
                            "goprobe: archive {}: can {} again ({failed} failed meanwhile)",
                            self.path.display(),
                            kind.name()
                        );
                    }
                    return Ok(());
                }
                Err(e @ ArchiveError::Corrupt { .. }) => {
                    if is_current(&state, &archive) {
                        self.replace_corrupt(&mut state, &e);
                    }
                }
                Err(e) => {
                    if matches!(e, ArchiveError::Io { .. }) && is_current(&state, &archive) {
                        // redb fails every later write after an I/O error: close the handle,
                        // and open the file again at the next write.
                        state.archive = None;
                    }
                    self.fail(&mut state, kind, &e);
                    return Err(e);
                }
            }
        }
        let mut state = self.state.lock().expect("archive lock");
        let e = self.unavailable(&state);
        self.fail(&mut state, kind, &e);
        Err(e)
    }

    /// Read the archive (the HTTP API). A corrupt archive found by the read is moved aside,
    /// and the error says so.
    pub fn read<T>(&self, read: impl FnOnce(&Archive) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let archive = {
            let state = self.state.lock().expect("archive lock");
            match &state.archive {
                Some(archive) => archive.clone(),
                None => return Err(self.unavailable(&state).into()),
            }
        };
        let result = read(&archive);
        if let Err(e) = &result
            && let Some(corrupt @ ArchiveError::Corrupt { path, message }) =
                e.downcast_ref::<ArchiveError>()
        {
            let mut state = self.state.lock().expect("archive lock");
            if is_current(&state, &archive) {
                self.replace_corrupt(&mut state, corrupt);
            }
            return Err(ArchiveError::Corrupt {
                path: path.clone(),
                message: format!(
                    "{message}; it was moved aside and a fresh archive started (see the agent's log)"
                ),
            }
            .into());
        }
        result
    }

    fn unavailable(&self, state: &State) -> ArchiveError {
        ArchiveError::Io {
            path: self.path.clone(),
            message: format!(
                "unavailable: {}",
                failing(state).unwrap_or_else(|| "not open".into())
            ),
            kind: None,
        }
    }

    /// Writes of a kind fail: said once, when they start failing.
    fn fail(&self, state: &mut State, kind: Kind, e: &ArchiveError) {
        let entry = state.failing.entry(kind).or_insert_with(|| {
            eprintln!(
                "goprobe: cannot {}: {e}; tracing goes on, the archive is reopened at each interval until a write works (goprobe_agent_archive_errors_total counts the writes that failed)",
                kind.name()
            );
            (String::new(), 0)
        });
        entry.0 = e.to_string();
        entry.1 += 1;
    }

    /// Open the file again after an I/O error.
    fn reopen(&self, state: &mut State) {
        match Archive::open(&self.path) {
            Ok(archive) => state.archive = Some(Arc::new(archive)),
            Err(e @ ArchiveError::Corrupt { .. }) => self.replace_corrupt(state, &e),
            Err(e) => self.fail(state, Kind::Open, &e),
        }
    }

    /// Move the corrupt file aside and start a fresh archive in its place.
    fn replace_corrupt(&self, state: &mut State, e: &ArchiveError) {
        // Close it first (a reader of the HTTP server may hold it a moment longer: renaming
        // does not disturb it, and the fresh file is another, unlocked one).
        state.archive = None;
        self.corrupt_total.fetch_add(1, Ordering::Relaxed);
        let aside = aside_path(&self.path);
        if let Err(rename) = std::fs::rename(&self.path, &aside) {
            eprintln!(
                "goprobe: {e}; cannot move it aside to {}: {rename}; running without an archive",
                aside.display()
            );
            state.failing.insert(
                Kind::Open,
                (format!("{e}; cannot move it aside: {rename}"), 1),
            );
            return;
        }
        eprintln!(
            "goprobe: {e}; moved it aside to {} and started a fresh archive",
            aside.display()
        );
        match Archive::open(&self.path) {
            Ok(archive) => state.archive = Some(Arc::new(archive)),
            Err(e) => self.fail(state, Kind::Open, &e),
        }
    }
}

/// What fails now, if anything: "cannot KIND: ERROR", joined.
fn failing(state: &State) -> Option<String> {
    let all: Vec<String> = state
        .failing
        .iter()
        .map(|(kind, (e, _))| format!("cannot {}: {e}", kind.name()))
        .collect();
    (!all.is_empty()).then(|| all.join("; "))
}

fn is_current(state: &State, archive: &Arc<Archive>) -> bool {
    state
        .archive
        .as_ref()
        .is_some_and(|current| Arc::ptr_eq(current, archive))
}

/// A full disk or quota: the agent starts without an archive and opens it when space returns.
fn full(e: &ArchiveError) -> bool {
    matches!(
        e,
        ArchiveError::Io {
            kind: Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded),
            ..
        }
    )
}

/// `<path>.corrupt-<UTC time>`, e.g. `archive.redb.corrupt-20261204T203015Z`.
fn aside_path(path: &Path) -> PathBuf {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    let mut aside = PathBuf::from(name);
    // Two in the same second: keep both.
    let mut n = 1;
    while aside.exists() {
        n += 1;
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".corrupt-{stamp}-{n}"));
        aside = PathBuf::from(name);
    }
    aside
}

/// Whether a file that redb refuses is a damaged redb file (its magic number, or a zeroed first
/// page), not some other file that archive.path names by mistake: only those are moved aside.
fn looks_like_redb(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = Vec::new();
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    if file.take(4096).read_to_end(&mut head).is_err() {
        return false;
    }
    let n = head.len().min(REDB_MAGIC.len());
    head[..n] == REDB_MAGIC[..n] || head.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::archive::testing::*;

    /// Every damaged copy that the start-up check finds corrupt is moved aside and a fresh archive takes its place and works; the others open and work too.
    #[test]
    fn corrupt_archive_is_moved_aside_at_start() {
        let dir = scratch("store-corrupt");
        let good = dir.join("good.redb");
        fill(&good);
        let bytes = std::fs::read(&good).unwrap();
        let mut moved = 0;
        for (i, (what, bad)) in corruptions(&bytes).into_iter().enumerate() {
            let sub = dir.join(format!("{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            let path = sub.join("archive.redb");
            std::fs::write(&path, &bad).unwrap();
            let store = Store::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
            let aside: Vec<PathBuf> = std::fs::read_dir(&sub)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains(".corrupt-"))
                .collect();
            assert_eq!(store.corrupt_total(), aside.len() as u64, "{what}");
            if let [aside] = &aside[..] {
                moved += 1;
                // Kept as found (redb may have rolled back a commit while opening it).
                assert!(std::fs::metadata(aside).unwrap().len() > 0, "{what}");
                assert!(
                    aside.to_string_lossy().contains("archive.redb.corrupt-20"),
                    "{}",
                    aside.display()
                );
            }
            store
                .write(&[record(9_000_000)], KEEP_ALL)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let found = store
                .read(|a| Ok(a.read(9_000_000, 9_000_000)?))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(found.len(), 1, "{what}");
            drop(store);
            let _ = std::fs::remove_dir_all(&sub);
        }
        assert!(moved >= 20, "only {moved} corrupt copies found");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Corruption found by a read while the agent runs: the archive is moved aside, the error
    /// says so, and the next write goes to a fresh archive.
    #[test]
    fn corrupt_archive_found_by_a_read_is_replaced() {
        let dir = scratch("store-read-corrupt");
        let path = dir.join("archive.redb");
        undecodable(&path);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.corrupt_total(), 0);
        let e = store.read(|a| Ok(a.read(0, u64::MAX)?)).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(ArchiveError::Corrupt { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("moved aside"), "{e}");
        assert_eq!(store.corrupt_total(), 1);
        assert_eq!(store.status().corrupt_total, 1);
        store.write(&[record(9_000_000)], KEEP_ALL).unwrap();
        let all = store.read(|a| Ok(a.read(0, u64::MAX)?)).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// archive.path naming some other file by mistake: the start is refused, the file untouched.
    #[test]
    fn a_file_that_is_not_redb_is_left_alone() {
        let dir = scratch("store-not-redb");
        let path = dir.join("notes.txt");
        let text = "not an archive, but somebody's notes\n".repeat(200);
        std::fs::write(&path, &text).unwrap();
        let e = Store::open(&path).err().expect("refused");
        assert!(e.to_string().contains("refusing to move it aside"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

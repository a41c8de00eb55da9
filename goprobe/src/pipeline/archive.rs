//! The archive: every interval's histograms, per series, in an embedded database on the host
//! (redb: copy-on-write B-trees, each commit fsync'ed, so a crash or SIGKILL loses at most the
//! interval not yet written, never what was committed).
//!
//! Keys are `(interval end in ms since the epoch, sequence)`, so a time range is one ordered
//! range scan and retention deletes from the front. Values are the series' labels and its
//! histogram in [`Latencies::encode`]'s compact form.
//!
//! A damaged file (a bad disk, a copy cut short, bytes changed by anything but redb) can make
//! redb panic instead of returning an error. Every call into redb here runs under
//! [`catch_unwind`](std::panic::catch_unwind), with the panic hook silent, so a damaged archive
//! is an [`ArchiveError::Corrupt`] like any other: never a crash of the agent or of `goprobe
//! query`, never a panic message in an answer.
use std::{
    cell::Cell,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::Once,
};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::{Latencies, series::SeriesKey};

const INTERVALS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("intervals");
/// Bookkeeping: "bytes" is the total size of the stored values, for the size limit.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// CPU profiles, one per process and interval: key `(interval end in ms, sequence)`, value the
/// interval start, the PID, the service label and the gzipped pprof profile.
const PROFILES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("profiles");

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "the archive {} is in use by another process (a running agent): query the agent's HTTP API with --url instead",
        .0.display()
    )]
    InUse(PathBuf),
    /// The file's content is damaged: it cannot be read as an archive (nor written to).
    #[error("archive {} is corrupt: {message}", .path.display())]
    Corrupt { path: PathBuf, message: String },
    /// The file system failed (full, I/O error): after one, redb fails every write until the
    /// database is opened again.
    #[error("archive {}: {message}", .path.display())]
    Io {
        path: PathBuf,
        message: String,
        kind: Option<std::io::ErrorKind>,
    },
    #[error("archive {}: {message}", .path.display())]
    Db { path: PathBuf, message: String },
}

/// One series' histogram over one interval.
#[derive(Debug, Clone)]
pub struct Record {
    pub start_ms: u64,
    pub end_ms: u64,
    pub series: SeriesKey,
    pub latencies: Latencies,
    /// `histogram.split`: the calls' time per state (`goprobe_common::split::NAMES`), in ns.
    pub split: Option<Vec<u64>>,
}

/// One process's CPU profile over one interval.
#[derive(Debug, Clone)]
pub struct ProfileRecord {
    pub start_ms: u64,
    pub end_ms: u64,
    pub pid: u32,
    pub service: String,
    /// A gzipped pprof profile.
    pub pprof_gz: Vec<u8>,
}

pub struct Archive {
    /// Always `Some` until dropped: taken out to be dropped under the panic guard (redb's drop
    /// writes to the file, and panics on some damaged ones).
    db: Option<Database>,
    path: PathBuf,
}

impl Drop for Archive {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = guard(&self.path, || {
                drop(db);
                Ok(())
            });
        }
    }
}

/// Retention limits.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age_ms: u64,
    pub max_bytes: u64,
}

/// redb's page cache. Its default, 1 GiB, is as large as the default retention, so an agent
/// left running for months would keep every archive page it ever wrote or read in memory; the
/// archive is written every interval and read by the occasional query, which a few MiB serve.
const CACHE_BYTES: usize = 8 << 20;

impl Archive {
    /// Open the archive, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| db_error(path, e))?;
        }
        let db = guard(path, || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .map_err(|e| db_error(path, e))
        })?;
        let archive = Self {
            db: Some(db),
            path: path.to_path_buf(),
        };
        // Create the tables, so readers of a new archive find them.
        archive.guarded(|db| {
            let txn = db.begin_write()?;
            txn.open_table(INTERVALS)?;
            txn.open_table(META)?;
            txn.open_table(PROFILES)?;
            txn.commit()?;
            Ok(())
        })?;
        Ok(archive)
    }

    /// Open the archive for the agent: as [`Archive::open`], then verify every page's checksum
    /// (redb rolls back to the last intact commit if it can), so a damaged file
    /// is found at start-up rather than by a query.
    pub fn open_checked(path: &Path) -> Result<Self, ArchiveError> {
        let mut archive = Self::open(path)?;
        let db = archive.db.as_mut().expect("open until dropped");
        guard(path, || match db.check_integrity() {
            Ok(_) => Ok(()),
            Err(e) => Err(db_error(path, e)),
        })?;
        archive.extent()?;
        Ok(archive)
    }

    /// Open an existing archive to read it (`goprobe query --archive`).
    pub fn open_existing(path: &Path) -> Result<Self, ArchiveError> {
        if !path.exists() {
            return Err(ArchiveError::Db {
                path: path.to_path_buf(),
                message: "no such file".into(),
            });
        }
        Self::open(path)
    }

    fn err(&self, e: impl Into<redb::Error>) -> ArchiveError {
        db_error(&self.path, e)
    }

    fn damaged(&self, message: String) -> ArchiveError {
        ArchiveError::Corrupt {
            path: self.path.clone(),
            message,
        }
    }

    /// Run `f` on the database under the panic guard, with redb's errors classified.
    fn guarded<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, Failure>,
    ) -> Result<T, ArchiveError> {
        let db = self.db.as_ref().expect("open until dropped");
        guard(&self.path, || {
            f(db).map_err(|e| match e {
                Failure::Redb(e) => self.err(e),
                Failure::Damaged(message) => self.damaged(message),
            })
        })
    }

    /// Write one interval's histograms in one transaction, then apply retention.
    pub fn write(&self, records: &[Record], retention: Retention) -> Result<(), ArchiveError> {
        self.guarded(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(INTERVALS)?;
                let mut meta = txn.open_table(META)?;
                let mut bytes = meta.get("bytes")?.map_or(0, |v| v.value());
                for (seq, record) in records.iter().enumerate() {
                    let value = encode(record);
                    bytes += value.len() as u64;
                    table.insert((record.end_ms, seq as u32), value.as_slice())?;
                }
                // Age: everything that ended before the horizon.
                let now = records.iter().map(|r| r.end_ms).max().unwrap_or(0);
                let horizon = now.saturating_sub(retention.max_age_ms);
                let mut doomed: Vec<((u64, u32), u64)> = Vec::new();
                for entry in table.range(..(horizon, 0))? {
                    let (k, v) = entry?;
                    doomed.push((k.value(), v.value().len() as u64));
                }
                // Size: the oldest intervals until the rest fits.
                let kept: u64 = bytes - doomed.iter().map(|d| d.1).sum::<u64>();
                if kept > retention.max_bytes {
                    let mut excess = kept - retention.max_bytes;
                    for entry in table.range((horizon, 0)..)? {
                        if excess == 0 {
                            break;
                        }
                        let (k, v) = entry?;
                        let len = v.value().len() as u64;
                        doomed.push((k.value(), len));
                        excess = excess.saturating_sub(len);
                    }
                }
                for (key, len) in doomed {
                    table.remove(key)?;
                    bytes -= len;
                }
                meta.insert("bytes", bytes)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Every record of an interval that ended within `[from_ms, to_ms]`.
    pub fn read(&self, from_ms: u64, to_ms: u64) -> Result<Vec<Record>, ArchiveError> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(INTERVALS)?;
            let mut out = Vec::new();
            for entry in table.range((from_ms, 0)..=(to_ms, u32::MAX))? {
                let (k, v) = entry?;
                let (end_ms, _) = k.value();
                match decode(end_ms, v.value()) {
                    Some(record) => out.push(record),
                    None => {
                        return Err(Failure::Damaged(format!(
                            "undecodable record at {end_ms} ms"
                        )));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Write one interval's CPU profiles, then apply retention to profiles: by age, and the
    /// oldest first while they take more than `max_bytes` (apart from the histograms' budget).
    pub fn write_profiles(
        &self,
        records: &[ProfileRecord],
        retention: Retention,
    ) -> Result<(), ArchiveError> {
        self.guarded(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(PROFILES)?;
                let mut meta = txn.open_table(META)?;
                let mut bytes = meta.get("profile_bytes")?.map_or(0, |v| v.value());
                for (seq, record) in records.iter().enumerate() {
                    let mut value = Vec::with_capacity(record.pprof_gz.len() + 64);
                    value.extend_from_slice(&record.start_ms.to_le_bytes());
                    value.extend_from_slice(&record.pid.to_le_bytes());
                    put_str(&mut value, &record.service);
                    value.extend_from_slice(&record.pprof_gz);
                    bytes += value.len() as u64;
                    table.insert((record.end_ms, seq as u32), value.as_slice())?;
                }
                let now = records.iter().map(|r| r.end_ms).max().unwrap_or(0);
                let horizon = now.saturating_sub(retention.max_age_ms);
                let mut doomed: Vec<((u64, u32), u64)> = Vec::new();
                let mut kept = bytes;
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    let (end_ms, _) = k.value();
                    if end_ms >= horizon && kept <= retention.max_bytes {
                        break;
                    }
                    let len = v.value().len() as u64;
                    doomed.push((k.value(), len));
                    kept = kept.saturating_sub(len);
                }
                for (key, len) in doomed {
                    table.remove(key)?;
                    bytes = bytes.saturating_sub(len);
                }
                meta.insert("profile_bytes", bytes)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Every CPU profile of an interval that ended within `[from_ms, to_ms]`.
    pub fn read_profiles(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<ProfileRecord>, ArchiveError> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(PROFILES) {
                Ok(table) => table,
                // An archive written before profiles existed.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for entry in table.range((from_ms, 0)..=(to_ms, u32::MAX))? {
                let (k, v) = entry?;
                let (end_ms, _) = k.value();
                let mut bytes = v.value();
                let record = (|| {
                    let start_ms = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
                    let pid = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
                    bytes = &bytes[12..];
                    let service = get_str(&mut bytes)?;
                    Some(ProfileRecord {
                        start_ms,
                        end_ms,
                        pid,
                        service,
                        pprof_gz: bytes.to_vec(),
                    })
                })();
                match record {
                    Some(record) => out.push(record),
                    None => {
                        return Err(Failure::Damaged(format!(
                            "undecodable profile at {end_ms} ms"
                        )));
                    }
                }
            }
            Ok(out)
        })
    }

    /// The first and last interval ends stored, and the bytes of stored values.
    pub fn extent(&self) -> Result<(Option<(u64, u64)>, u64), ArchiveError> {
        self.guarded(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(INTERVALS)?;
            let meta = txn.open_table(META)?;
            let first = table.first()?.map(|e| e.0.value().0);
            let last = table.last()?.map(|e| e.0.value().0);
            let bytes = meta.get("bytes")?.map_or(0, |v| v.value());
            Ok((first.zip(last), bytes))
        })
    }
}

/// What went wrong inside a guarded call: redb's error, or a record that does not decode.
enum Failure {
    Redb(redb::Error),
    Damaged(String),
}

macro_rules! failure_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::Redb(e.into())
            }
        }
    )*};
}
failure_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// redb's errors, sorted by what the agent does about them.
fn db_error(path: &Path, e: impl Into<redb::Error>) -> ArchiveError {
    let path = path.to_path_buf();
    let e: redb::Error = e.into();
    let message = e.to_string();
    match e {
        redb::Error::DatabaseAlreadyOpen => ArchiveError::InUse(path),
        // A file that is not redb's, cut short, or inconsistent; a poisoned lock or transaction
        // comes only after a panic, which only a damaged file causes.
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::LockPoisoned(_)
        | redb::Error::TransactionPoisoned => ArchiveError::Corrupt { path, message },
        redb::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            ArchiveError::Corrupt { path, message }
        }
        redb::Error::Io(e) => ArchiveError::Io {
            path,
            message,
            kind: Some(e.kind()),
        },
        redb::Error::PreviousIo => ArchiveError::Io {
            path,
            message,
            kind: None,
        },
        _ => ArchiveError::Db { path, message },
    }
}

thread_local! {
    /// Set while a guarded call runs on this thread: its panics are caught and reported as a
    /// damaged archive, so the panic hook stays silent for them.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`, turning a panic into [`ArchiveError::Corrupt`] (redb panics on some damaged files).
fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T, ArchiveError>) -> Result<T, ArchiveError> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.get() {
                previous(info);
            }
        }));
    });
    let outer = GUARDED.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.set(outer);
    result.unwrap_or_else(|_| {
        Err(ArchiveError::Corrupt {
            path: path.to_path_buf(),
            message: "its B-trees are inconsistent (redb cannot read them)".into(),
        })
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

fn get_str(bytes: &mut &[u8]) -> Option<String> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = u16::from_le_bytes(*len) as usize;
    let s = std::str::from_utf8(rest.get(..len)?).ok()?.to_string();
    *bytes = &rest[len..];
    Some(s)
}

/// `[version][start offset ms: u64 le][function][service][container][pod][namespace][pid: u32]`
/// then the histogram.
/// Version 1: labels and histogram. Version 2 (`histogram.split`): the calls' time per state
/// between the PID and the histogram (a count, then that many u64 ns). Versions 3 (without the
/// split) and 4 (with it): the argument values (`by`, packs) right after the PID, a count then
/// that many (name, value) strings.
fn encode(record: &Record) -> Vec<u8> {
    let s = &record.series;
    let version = match (record.split.is_some(), s.by.is_empty()) {
        (false, true) => 1u8,
        (true, true) => 2,
        (false, false) => 3,
        (true, false) => 4,
    };
    let mut out = vec![version];
    out.extend_from_slice(&(record.end_ms - record.start_ms).to_le_bytes());
    for field in [&s.function, &s.service, &s.container, &s.pod, &s.namespace] {
        put_str(&mut out, field);
    }
    out.extend_from_slice(&s.pid.unwrap_or(0).to_le_bytes());
    if !s.by.is_empty() {
        out.push(s.by.len().min(255) as u8);
        for (name, value) in s.by.iter().take(255) {
            put_str(&mut out, name);
            put_str(&mut out, value);
        }
    }
    if let Some(split) = &record.split {
        out.push(split.len().min(255) as u8);
        for ns in split.iter().take(255) {
            out.extend_from_slice(&ns.to_le_bytes());
        }
    }
    record.latencies.encode(&mut out);
    out
}

fn decode(end_ms: u64, mut bytes: &[u8]) -> Option<Record> {
    let b = &mut bytes;
    let (&version, rest) = b.split_first()?;
    if !(1..=4).contains(&version) {
        return None;
    }
    let (length, rest) = rest.split_first_chunk::<8>()?;
    *b = rest;
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        fields.push(get_str(b)?);
    }
    let (pid, mut rest) = b.split_first_chunk::<4>()?;
    let pid = u32::from_le_bytes(*pid);
    let mut by = Vec::new();
    if version >= 3 {
        let (&n, mut values) = rest.split_first()?;
        for _ in 0..n {
            let name = get_str(&mut values)?;
            by.push((name, get_str(&mut values)?));
        }
        rest = values;
    }
    let mut split = None;
    if version == 2 || version == 4 {
        let (&n, mut states) = rest.split_first()?;
        let mut ns = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let (value, more) = states.split_first_chunk::<8>()?;
            ns.push(u64::from_le_bytes(*value));
            states = more;
        }
        split = Some(ns);
        rest = states;
    }
    let latencies = Latencies::decode(rest)?;
    let mut fields = fields.into_iter();
    let mut next = || fields.next().unwrap_or_default();
    Some(Record {
        start_ms: end_ms.saturating_sub(u64::from_le_bytes(*length)),
        end_ms,
        series: SeriesKey {
            function: next(),
            service: next(),
            container: next(),
            pod: next(),
            namespace: next(),
            pid: (pid != 0).then_some(pid),
            by,
        },
        latencies,
        split,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(end_ms: u64, function: &str, ns: u64, calls: u64) -> Record {
        let mut latencies = Latencies::default();
        for _ in 0..calls {
            latencies.record(ns);
        }
        Record {
            start_ms: end_ms - 1000,
            end_ms,
            series: SeriesKey {
                function: function.into(),
                service: "svc".into(),
                container: "abc".into(),
                ..SeriesKey::default()
            },
            latencies,
            split: None,
        }
    }

    const KEEP_ALL: Retention = Retention {
        max_age_ms: u64::MAX,
        max_bytes: u64::MAX,
    };

    /// A record with the split (version 2) comes back with it; one without, without.
    #[test]
    fn encodes_the_split() {
        let mut with = record(5_000, "f", 1000, 3);
        with.split = Some((0..20).map(|i| i * 7).collect());
        let back = decode(5_000, &encode(&with)).unwrap();
        assert_eq!(back.split, with.split);
        assert_eq!(back.latencies.count, 3);
        assert_eq!(back.series.container, "abc");
        let plain = record(5_000, "f", 1000, 3);
        assert_eq!(encode(&plain)[0], 1);
        assert_eq!(decode(5_000, &encode(&plain)).unwrap().split, None);
    }

    #[test]
    fn writes_reads_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("goprobe-archive-{}", std::process::id()));
        let path = dir.join("a.redb");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let a = Archive::open(&path).unwrap();
            a.write(
                &[record(10_000, "f", 1000, 3), record(10_000, "g", 5, 1)],
                KEEP_ALL,
            )
            .unwrap();
            a.write(&[record(11_000, "f", 2000, 2)], KEEP_ALL).unwrap();
            // A second opener is refused while the first holds the file.
            assert!(matches!(Archive::open(&path), Err(ArchiveError::InUse(_))));
        }
        let a = Archive::open_existing(&path).unwrap();
        let all = a.read(0, u64::MAX).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].series.function, "f");
        assert_eq!(all[0].series.container, "abc");
        assert_eq!(all[0].start_ms, 9_000);
        assert_eq!(all[0].latencies.count, 3);
        assert_eq!(a.read(10_500, 11_000).unwrap().len(), 1);
        assert_eq!(a.extent().unwrap().0, Some((10_000, 11_000)));

        // Age: a write at 20 s with a 5 s retention drops both earlier intervals.
        a.write(
            &[record(20_000, "f", 1, 1)],
            Retention {
                max_age_ms: 5_000,
                max_bytes: u64::MAX,
            },
        )
        .unwrap();
        assert_eq!(a.read(0, u64::MAX).unwrap().len(), 1);
        // Size: a tiny limit keeps only the newest interval.
        a.write(
            &[record(21_000, "f", 1, 1)],
            Retention {
                max_age_ms: u64::MAX,
                max_bytes: 10,
            },
        )
        .unwrap();
        let left = a.read(0, u64::MAX).unwrap();
        assert!(left.len() <= 1, "{left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// redb panics on some damaged files (an `unreachable!` in its B-tree code, slices out of
    /// range): every call here returns an error instead, the panic hook prints nothing, and a
    /// panic elsewhere still reaches the hook.
    #[test]
    fn corrupt_files_give_errors_not_panics() {
        use super::testing::*;
        let dir = scratch("archive-corrupt");
        let good = dir.join("good.redb");
        fill(&good);
        let bytes = std::fs::read(&good).unwrap();
        let (mut caught, mut corrupt, mut ok) = (0, 0, 0);
        for (i, (what, bad)) in corruptions(&bytes).into_iter().enumerate() {
            let path = dir.join(format!("bad{i}.redb"));
            std::fs::write(&path, &bad).unwrap();
            let outcome = std::panic::catch_unwind(|| {
                let a = Archive::open_existing(&path)?;
                a.read(0, u64::MAX)?;
                a.read_profiles(0, u64::MAX)?;
                a.extent()?;
                a.write(&[record(9_000_000)], KEEP_ALL)
            });
            match outcome {
                Err(_) => panic!("{what}: the archive panicked"),
                Ok(Err(ArchiveError::Corrupt { message, .. })) => {
                    corrupt += 1;
                    caught += usize::from(message.contains("B-trees are inconsistent"));
                }
                Ok(Err(e)) => panic!("{what}: {e} is not reported as corruption"),
                Ok(Ok(())) => ok += 1,
            }
            let _ = std::fs::remove_file(&path);
        }
        // The fixtures do reach redb's panics (so the guard is tested), and most damage is found.
        assert!(caught >= 5, "only {caught} panics caught");
        assert!(corrupt > ok, "{corrupt} corrupt, {ok} read fine");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Damaged copies of an archive, for the tests of every reader of archives.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub const KEEP_ALL: Retention = Retention {
        max_age_ms: u64::MAX,
        max_bytes: u64::MAX,
    };

    pub fn record(end_ms: u64) -> Record {
        let mut latencies = Latencies::default();
        latencies.record(end_ms % 1000 + 1);
        Record {
            start_ms: end_ms - 1000,
            end_ms,
            series: SeriesKey {
                function: format!("main.f{}", end_ms % 7),
                service: "svc".into(),
                ..SeriesKey::default()
            },
            latencies,
            split: None,
        }
    }

    /// An archive of several pages: intervals and profiles.
    pub fn fill(path: &Path) {
        let a = Archive::open(path).unwrap();
        for i in 0..40u64 {
            let records: Vec<Record> = (0..25).map(|j| record(1_000_000 + i * 1000 + j)).collect();
            a.write(&records, KEEP_ALL).unwrap();
            let profile = ProfileRecord {
                start_ms: 0,
                end_ms: 1_000_000 + i * 1000,
                pid: 7,
                service: "svc".into(),
                pprof_gz: vec![i as u8; 300],
            };
            a.write_profiles(&[profile], KEEP_ALL).unwrap();
        }
    }

    /// Damaged copies of `bytes`: each 4 KiB page zeroed in turn, cut short at twentieths, and
    /// bits flipped at pseudo-random offsets (fixed seeds).
    pub fn corruptions(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        const PAGE: usize = 4096;
        for k in 0..bytes.len() / PAGE {
            let mut b = bytes.to_vec();
            b[k * PAGE..(k + 1) * PAGE].fill(0);
            out.push((format!("page {k} zeroed"), b));
        }
        for f in 1..20 {
            out.push((
                format!("cut to {f}/20"),
                bytes[..bytes.len() * f / 20].to_vec(),
            ));
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in 0..120 {
            let mut b = bytes.to_vec();
            for _ in 0..(1 + seed % 8) {
                let at = (next() % b.len() as u64) as usize;
                b[at] ^= 1 << (next() % 8);
            }
            out.push((format!("bits flipped (seed {seed})"), b));
        }
        out
    }

    /// An intact redb file whose one interval record does not decode (as bytes changed inside
    /// a page whose checksum was recomputed would).
    pub fn undecodable(path: &Path) {
        drop(Archive::open(path).unwrap());
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(INTERVALS)
            .unwrap()
            .insert((1_000, 0), &[9u8, 9, 9][..])
            .unwrap();
        txn.commit().unwrap();
    }

    pub fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("goprobe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

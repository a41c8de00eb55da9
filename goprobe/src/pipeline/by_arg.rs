//! `funclatency --by` and packs: each call's latency under the values its arguments had.
//!
//! The kernel sends a call's values at its entry ([`ArgEvent`]), its results (and what it wrote
//! through a pointer argument) at its return, then its latency; the ring buffer delivers them
//! in that order. A call is named by (process, goroutine, start
//! time), and the latency event gives its start as `end_ns - latency_ns`. Each distinct set of
//! values of a function becomes a function id of its own ([`FunctionInfo::labels`]), so every
//! output (text, JSON, the agent's series) shows it as one more row, with no new key.
//!
//! Memory stays bounded: a function gets at most `max_values` distinct value sets, the later
//! ones all count under `other` (the first seen keep their rows; with `top_k`, as in the agent,
//! [`ByArg::rebalance`] gives the rows to the values with the most calls each interval); calls whose values never came (the ring buffer was full) count
//! under `(lost)`, and values that wait too long for their return are dropped, counted.
use std::collections::HashMap;

use goprobe_common::{ArgEvent, LatencyEvent, args};

use super::{FunctionInfo, FunctionTable};

/// Calls whose values wait for their return at once, over all processes; beyond it the oldest
/// are dropped (their calls then count under `(lost)`).
pub const MAX_PENDING: usize = 1 << 20;

/// Distinct value sets per function, by default; the rest are `other`.
pub const DEFAULT_MAX_VALUES: usize = 100;

/// Values under `other` tracked as candidates for a row, per row (see [`ByArg::rebalance`]).
const CANDIDATES: usize = 4;

pub const OTHER: &str = "other";
pub const LOST: &str = "(lost)";
pub const UNREADABLE: &str = "(unreadable)";
/// A path's pointer was nil on the way (`ret0.StatusCode` of a request that failed).
pub const NIL: &str = "(nil)";
/// An asserted interface (`rw.(*net/http.response)`) held another type.
pub const OTHER_TYPE: &str = "(other type)";

#[derive(Debug)]
pub struct ByArg {
    pub max_values: usize,
    /// Values of open calls, by (tgid, g, start_ns); `None` until the event that reads it
    /// (entry or return) has come.
    pending: HashMap<(u32, u64, u64), Vec<Option<String>>>,
    /// Base function → values → the function id its calls are counted under (two levels, so
    /// that a call's lookup borrows its values rather than cloning them).
    ids: HashMap<u32, HashMap<Vec<String>, u32>>,
    /// Distinct value sets given an id of their own, per base function.
    distinct: HashMap<u32, usize>,
    /// Values dropped while waiting for their return (MAX_PENDING reached).
    pub pending_dropped: u64,
    /// Values that could not be read (a bad pointer on the way, or the string's bytes).
    pub unreadable: u64,
    /// Calls counted under `other` because their function had `max_values` value sets already.
    pub over_limit: u64,
    /// Calls that `--where` left out.
    pub filtered_out: u64,
    /// Values of asserted interfaces that held another type.
    pub other_type: u64,
    /// Values read at the return through a pointer that the kernel had to evict (more calls
    /// open at once than it keeps pointers for).
    pub kept_lost: u64,
    /// Rank values by their calls at each [`ByArg::rebalance`] (the agent) rather than keep
    /// the first seen (funclatency).
    pub top_k: bool,
    /// With `top_k`: calls per value id since the last rebalance.
    recent: HashMap<u32, u64>,
    /// With `top_k`: values counted under `other` since the last rebalance, and their calls,
    /// by base function; at most `CANDIDATES × max_values` per function.
    candidates: HashMap<u32, HashMap<Vec<String>, u64>>,
    /// Values that lost their row to one with more calls.
    pub demoted: u64,
    /// Processes found exited at the last sweep that still had values waiting: removed at the
    /// next one, once every event they sent before exiting has been drained.
    exited: std::collections::HashSet<u32>,
}

impl Default for ByArg {
    fn default() -> Self {
        ByArg {
            max_values: DEFAULT_MAX_VALUES,
            pending: HashMap::new(),
            ids: HashMap::new(),
            distinct: HashMap::new(),
            pending_dropped: 0,
            unreadable: 0,
            over_limit: 0,
            filtered_out: 0,
            other_type: 0,
            kept_lost: 0,
            top_k: false,
            recent: HashMap::new(),
            candidates: HashMap::new(),
            demoted: 0,
            exited: std::collections::HashSet::new(),
        }
    }
}

impl ByArg {
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Drop the waiting values of processes that had exited at the previous sweep (their calls
    /// that never returned will not), and note those exited now. A long-running agent keeps
    /// values only for processes alive.
    pub fn forget_exited(&mut self, alive: impl Fn(u32) -> bool) {
        let gone = std::mem::take(&mut self.exited);
        if !gone.is_empty() {
            self.pending.retain(|k, _| !gone.contains(&k.0));
        }
        self.exited = self
            .pending
            .keys()
            .map(|k| k.0)
            .filter(|&tgid| !alive(tgid))
            .collect();
    }

    /// A call's values arrived (at its entry, or at its return: each event carries the values
    /// read there); `kinds`: how its function's values are read (`args::KIND_*`, one per label).
    pub fn values(&mut self, event: &ArgEvent, info: &FunctionInfo) {
        if self.pending.len() >= MAX_PENDING {
            // Calls open this long without returning are rare (a panic unwound them, or a
            // goroutine blocks for good): drop the oldest half rather than grow.
            let mut starts: Vec<u64> = self.pending.keys().map(|k| k.2).collect();
            starts.sort_unstable();
            let cut = starts[starts.len() / 2];
            let before = self.pending.len();
            self.pending.retain(|k, _| k.2 > cut);
            self.pending_dropped += (before - self.pending.len()) as u64;
        }
        let values: Vec<Option<String>> = event
            .values
            .iter()
            .zip(&info.by)
            .map(|(v, (label, kind))| {
                (v.status != args::ELSEWHERE).then(|| {
                    let text = self.render(v, *kind, info.normalize_sql);
                    match info
                        .value_map
                        .iter()
                        .find(|(l, from, _)| l == label && *from == text)
                    {
                        Some((_, _, to)) => (*to).to_string(),
                        None => text,
                    }
                })
            })
            .collect();
        let key = (event.tgid, event.g, event.start_ns);
        match self.pending.get_mut(&key) {
            Some(earlier) => {
                for (slot, value) in earlier.iter_mut().zip(values) {
                    if value.is_some() {
                        *slot = value;
                    }
                }
            }
            None => {
                self.pending.insert(key, values);
            }
        }
    }

    fn render(&mut self, value: &goprobe_common::ArgValue, kind: u32, sql: bool) -> String {
        match value.status {
            args::UNREADABLE => {
                self.unreadable += 1;
                return UNREADABLE.to_string();
            }
            args::NIL => return NIL.to_string(),
            args::OTHER_TYPE => {
                self.other_type += 1;
                return OTHER_TYPE.to_string();
            }
            args::LOST => {
                self.kept_lost += 1;
                return LOST.to_string();
            }
            _ => {}
        }
        let mut text = match kind {
            // An interface's first word: its itab or type, 0 when it is nil.
            args::KIND_IFACE if value.int == 0 => "nil".to_string(),
            args::KIND_IFACE => "non-nil".to_string(),
            args::KIND_STRING => {
                let len = (value.len as usize).min(args::STRING_BYTES);
                String::from_utf8_lossy(&value.bytes[..len]).into_owned()
            }
            args::KIND_BOOL => (value.int != 0).to_string(),
            args::KIND_INT => (value.int as i64).to_string(),
            _ => value.int.to_string(),
        };
        if sql {
            text = normalize_sql(&text);
        }
        if value.status == args::TRUNCATED {
            text.push('…');
        }
        text
    }

    /// The function id the call of `event` counts under: its own values', `other`, or `(lost)`;
    /// `None` for a call that `--where` leaves out (counted in `filtered_out`). A call whose
    /// values were lost cannot be tested, and counts under `(lost)`.
    pub fn id_of(&mut self, event: &LatencyEvent, functions: &mut FunctionTable) -> Option<u32> {
        let start = event.end_ns.saturating_sub(event.latency_ns);
        let Some(base) = functions.get(event.func) else {
            return Some(event.func);
        };
        let values = self.pending.remove(&(event.tgid, event.g, start));
        // Lost: the entry's or the return's event never came (the ring buffer was full).
        let lost = values
            .as_ref()
            .is_none_or(|v| v.iter().any(Option::is_none));
        let mut values: Vec<String> = match values {
            Some(values) => values
                .into_iter()
                .map(|v| v.unwrap_or_else(|| LOST.to_string()))
                .collect(),
            None => vec![LOST.to_string(); base.by.len()],
        };
        if let Some((index, filter)) = &base.filter
            && !lost
            && !values.get(*index).is_some_and(|v| filter.matches(v))
        {
            self.filtered_out += 1;
            return None;
        }
        values.truncate(base.labelled);
        let values = values;
        if let Some(&id) = self.ids.get(&event.func).and_then(|ids| ids.get(&values)) {
            if self.top_k {
                *self.recent.entry(id).or_default() += 1;
            }
            return Some(id);
        }
        let distinct = self.distinct.entry(event.func).or_default();
        let values = if *distinct >= self.max_values && !lost {
            self.over_limit += 1;
            if self.top_k {
                let candidates = self.candidates.entry(event.func).or_default();
                if candidates.len() >= CANDIDATES * self.max_values
                    && !candidates.contains_key(&values)
                {
                    // Full: halve every count and let the rarest go (lossy counting); a value
                    // with many calls keeps its place.
                    candidates.retain(|_, calls| {
                        *calls /= 2;
                        *calls > 0
                    });
                }
                if candidates.len() < CANDIDATES * self.max_values
                    || candidates.contains_key(&values)
                {
                    *candidates.entry(values).or_default() += 1;
                }
            }
            vec![OTHER.to_string(); base.labelled]
        } else {
            values
        };
        if let Some(&id) = self.ids.get(&event.func).and_then(|ids| ids.get(&values)) {
            return Some(id);
        }
        if !lost {
            *distinct += 1;
        }
        let names = base.by.iter().take(base.labelled).map(|(name, _)| name);
        let info = FunctionInfo {
            labels: names.cloned().zip(values.iter().cloned()).collect(),
            by: Vec::new(),
            base: Some(event.func),
            ..base.clone()
        };
        let id = functions.add(info);
        self.ids.entry(event.func).or_default().insert(values, id);
        if self.top_k {
            *self.recent.entry(id).or_default() += 1;
        }
        Some(id)
    }
}

impl ByArg {
    /// With `top_k`, between two intervals (no call counted under the ids in between, since
    /// rows are relabelled): each value under `other` with more calls (halved at each interval
    /// before) than the least-called value that has a row takes that row (its id,
    /// relabelled), and the other value counts under `other` from now on. Every call is counted once either way, and the
    /// ids stay at `max_values` per function. Returns the rows that changed value.
    pub fn rebalance(&mut self, functions: &mut FunctionTable) -> usize {
        if !self.top_k {
            return 0;
        }
        let candidates = std::mem::take(&mut self.candidates);
        let mut recent = std::mem::take(&mut self.recent);
        let mut swaps = 0;
        for (base, candidates) in candidates {
            let special = |values: &[String]| values.iter().all(|v| v == OTHER || v == LOST);
            let ids = self.ids.entry(base).or_default();
            let mut rows: Vec<(u64, Vec<String>, u32)> = ids
                .iter()
                .filter(|(values, _)| !special(values))
                .map(|(values, &id)| (recent.get(&id).copied().unwrap_or(0), values.clone(), id))
                .collect();
            rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let mut best: Vec<(u64, Vec<String>)> = candidates
                .into_iter()
                .map(|(v, calls)| (calls, v))
                .collect();
            best.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let mut left = HashMap::new();
            for (calls, values) in best {
                let beats = matches!(rows.last(), Some((least, _, _)) if calls > *least);
                if !beats {
                    left.insert(values, calls / 2);
                    continue;
                }
                let Some((_, old, id)) = rows.pop() else {
                    break;
                };
                ids.remove(&old);
                let info = functions.get_mut(id);
                for ((_, label), value) in info.labels.iter_mut().zip(&values) {
                    label.clone_from(value);
                }
                ids.insert(values, id);
                recent.insert(id, calls);
                self.demoted += 1;
                swaps += 1;
            }
            left.retain(|_, calls| *calls > 0);
            if !left.is_empty() {
                self.candidates.insert(base, left);
            }
        }
        // Counts decay by half each interval: a value's rank is mostly its latest intervals'.
        recent.retain(|_, calls| {
            *calls /= 2;
            *calls > 0
        });
        self.recent = recent;
        swaps
    }
}

/// SQL with its literals replaced by `?`: quoted strings, numbers, and lists of them
/// (`IN (1, 2, 3)` becomes `IN (?)`), whitespace collapsed. No value of a query leaves the host.
pub fn normalize_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let prev_word = |out: &String| {
        out.chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            // A quoted literal ('' escapes a quote); an unterminated one runs to the end.
            let quote = c;
            i += 1;
            while i < chars.len() {
                if chars[i] == quote {
                    if chars.get(i + 1) == Some(&quote) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push('?');
        } else if c.is_ascii_digit() && !prev_word(&out) {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push('?');
        } else if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if !out.is_empty() {
                out.push(' ');
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    let mut text = out.trim_end().to_string();
    // `(?, ?, ?)` → `(?)`.
    while text.contains("?, ?") || text.contains("?,?") {
        text = text.replace("?, ?", "?").replace("?,?", "?");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_literals_become_placeholders() {
        assert_eq!(
            normalize_sql("SELECT name FROM users WHERE id = 42 AND  x='a''b'"),
            "SELECT name FROM users WHERE id = ? AND x=?"
        );
        assert_eq!(
            normalize_sql("select * from t2 where v in (1, 2, 3.5)"),
            "select * from t2 where v in (?)"
        );
        assert_eq!(normalize_sql("SELECT SLEEP(0.005)"), "SELECT SLEEP(?)");
        assert_eq!(
            normalize_sql("INSERT INTO t VALUES ('x"),
            "INSERT INTO t VALUES (?"
        );
    }

    fn arg_event(tgid: u32, g: u64, start_ns: u64, text: &str) -> ArgEvent {
        let mut e = ArgEvent {
            tgid,
            g,
            start_ns,
            ..ArgEvent::default()
        };
        e.values[0].len = text.len() as u32;
        e.values[0].bytes[..text.len()].copy_from_slice(text.as_bytes());
        e
    }

    /// A table with one function labelled by a string `key`, and its id.
    fn keyed_function() -> (FunctionTable, u32) {
        let mut functions = FunctionTable::default();
        let base = functions.add(FunctionInfo {
            name: "main.f".into(),
            by: vec![("key".into(), args::KIND_STRING)],
            labelled: 1,
            ..FunctionInfo::default()
        });
        (functions, base)
    }

    #[test]
    fn top_k_gives_rows_to_the_most_called_values() {
        let (mut functions, base) = keyed_function();
        let mut by = ByArg {
            max_values: 2,
            top_k: true,
            ..ByArg::default()
        };
        let mut start = 0;
        let mut call = |by: &mut ByArg, functions: &mut FunctionTable, key: &str| {
            start += 10;
            by.values(&arg_event(1, 7, start, key), functions.get(base).unwrap());
            let event = LatencyEvent {
                tgid: 1,
                func: base,
                latency_ns: 5,
                end_ns: start + 5,
                g: 7,
            };
            by.id_of(&event, functions).unwrap()
        };
        let label =
            |functions: &FunctionTable, id: u32| functions.get(id).unwrap().labels[0].1.clone();
        // First seen: a and b take the rows; c, called most, counts under other.
        let a = call(&mut by, &mut functions, "a");
        call(&mut by, &mut functions, "b");
        call(&mut by, &mut functions, "b");
        for _ in 0..5 {
            let id = call(&mut by, &mut functions, "c");
            assert_eq!(label(&functions, id), OTHER);
        }
        assert_eq!(by.rebalance(&mut functions), 1);
        // a (1 call) gave its row to c; c's calls now count under that id, a's under other.
        assert_eq!(label(&functions, a), "c");
        assert_eq!(call(&mut by, &mut functions, "c"), a);
        let id = call(&mut by, &mut functions, "a");
        assert_eq!(label(&functions, id), OTHER);
        assert_eq!(by.demoted, 1);
        // Nothing under other beats the rows: no change.
        assert_eq!(by.rebalance(&mut functions), 0);
    }

    #[test]
    fn calls_join_their_values_and_the_cap_holds() {
        let (mut functions, base) = keyed_function();
        let mut by = ByArg {
            max_values: 2,
            ..ByArg::default()
        };
        let call = |tgid, g, start: u64, latency: u64| LatencyEvent {
            tgid,
            func: base,
            latency_ns: latency,
            end_ns: start + latency,
            g,
        };
        let mut ids = Vec::new();
        for (i, key) in ["a", "b", "a", "c"].iter().enumerate() {
            let start = 1000 * i as u64;
            by.values(&arg_event(1, 7, start, key), functions.get(base).unwrap());
            ids.push(by.id_of(&call(1, 7, start, 5), &mut functions).unwrap());
        }
        assert_eq!(ids[0], ids[2]);
        assert_ne!(ids[0], ids[1]);
        let label =
            |functions: &FunctionTable, id: u32| functions.get(id).unwrap().labels[0].1.clone();
        assert_eq!(label(&functions, ids[0]), "a");
        assert_eq!(label(&functions, ids[3]), OTHER);
        assert_eq!(functions.base_of(ids[3]), base);
        assert_eq!(by.over_limit, 1);
        // No values: (lost), whatever the cap.
        let lost = by.id_of(&call(1, 8, 99, 1), &mut functions).unwrap();
        assert_eq!(label(&functions, lost), LOST);
        assert_eq!(by.pending(), 0);
        // Values of a process that exited go at the second sweep after it, not the first.
        by.values(&arg_event(9, 7, 1, "a"), functions.get(base).unwrap());
        by.forget_exited(|tgid| tgid != 9);
        assert_eq!(by.pending(), 1);
        by.forget_exited(|tgid| tgid != 9);
        assert_eq!(by.pending(), 0);
    }
}

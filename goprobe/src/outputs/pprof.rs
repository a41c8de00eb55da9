//! pprof's `profile.proto`, gzipped, as `go tool pprof` reads it: sample types, mappings,
//! functions, and locations whose lines list the inlined frames at a PC (innermost first, the
//! function they were inlined into last), as Go's own runtime/pprof writes them.
//!
//! The messages are declared with prost's derive, field for field from
//! github.com/google/pprof/proto/profile.proto (what prost-build would generate, without needing
//! protoc at build time); prost does the encoding.
use std::{collections::HashMap, io::Write as _, path::Path};

use prost::Message as _;

use crate::{
    pipeline::{
        archive::{Archive, ProfileRecord},
        history::Range,
    },
    symbolize::{Kind, Location as StackLocation},
};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The leaf is at `location_id[0]`.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Inlined frames first; the last line is the function they were inlined into.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Builds a [`Profile`] from symbolized stacks, interning strings, functions, mappings and
/// locations.
pub struct ProfileBuilder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    mappings: HashMap<crate::symbolize::Mapping, u64>,
    locations: HashMap<StackLocation, u64>,
    raw_locations: HashMap<RawLocationKey, u64>,
}

/// A location of a merged profile: mapping id, address, (function id, line) per line.
type RawLocationKey = (u64, u64, Vec<(u64, i64)>);

impl ProfileBuilder {
    /// `sample_types`: (type, unit) per value, e.g. `[("samples", "count"), ("cpu",
    /// "nanoseconds")]`. `period`: (type, unit, value) of the sampling period, if any.
    pub fn new(sample_types: &[(&str, &str)], period: Option<(&str, &str, i64)>) -> Self {
        let mut b = Self {
            profile: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            raw_locations: HashMap::new(),
        };
        b.string(""); // string_table[0] must be ""
        b.profile.sample_type = sample_types
            .iter()
            .map(|(t, u)| ValueType {
                r#type: b.string(t),
                unit: b.string(u),
            })
            .collect();
        if let Some((t, u, p)) = period {
            b.profile.period_type = Some(ValueType {
                r#type: b.string(t),
                unit: b.string(u),
            });
            b.profile.period = p;
        }
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        if let Some(&id) = self.functions.get(&(name.to_string(), file.to_string())) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let (name_i, file_i) = (self.string(name), self.string(file));
        self.profile.function.push(Function {
            id,
            name: name_i,
            system_name: name_i,
            filename: file_i,
            start_line: 0,
        });
        self.functions
            .insert((name.to_string(), file.to_string()), id);
        id
    }

    fn mapping(&mut self, m: &crate::symbolize::Mapping) -> u64 {
        if let Some(&id) = self.mappings.get(m) {
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let (file, build_id) = (self.string(&m.file), self.string(&m.build_id));
        // Everything goprobe writes is symbolized already: pprof must not look for the binary.
        self.profile.mapping.push(Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename: file,
            build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mappings.insert(m.clone(), id);
        id
    }

    fn location(&mut self, loc: &StackLocation) -> u64 {
        if let Some(&id) = self.locations.get(loc) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        let mapping_id = loc.mapping.as_ref().map_or(0, |m| self.mapping(m));
        let line = loc
            .lines
            .iter()
            .map(|l| Line {
                function_id: self.function(&l.function, &l.file),
                line: i64::from(l.line),
                column: 0,
            })
            .collect();
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: if loc.kind == Kind::Truncated {
                0
            } else {
                loc.address
            },
            line,
            is_folded: false,
        });
        self.locations.insert(loc.clone(), id);
        id
    }

    /// A location from already interned lines (for merging profiles), deduplicated.
    fn raw_location(&mut self, mapping_id: u64, address: u64, line: Vec<Line>) -> u64 {
        let key = (
            mapping_id,
            address,
            line.iter().map(|l| (l.function_id, l.line)).collect(),
        );
        if let Some(&id) = self.raw_locations.get(&key) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.raw_locations.insert(key, id);
        id
    }

    /// Add a sample: a stack (innermost first) and one value per sample type.
    pub fn add(&mut self, stack: &[StackLocation], values: &[i64], labels: &[(&str, &str)]) {
        let location_id = stack.iter().map(|l| self.location(l)).collect();
        self.add_raw(location_id, values, labels);
    }

    fn add_raw(&mut self, location_id: Vec<u64>, values: &[i64], labels: &[(&str, &str)]) {
        let label = labels
            .iter()
            .map(|(k, v)| Label {
                key: self.string(k),
                str: self.string(v),
                num: 0,
                num_unit: 0,
            })
            .collect();
        self.profile.sample.push(Sample {
            location_id,
            value: values.to_vec(),
            label,
        });
    }

    pub fn comment(&mut self, text: &str) {
        let i = self.string(text);
        self.profile.comment.push(i);
    }

    pub fn finish(mut self, time_nanos: i64, duration_nanos: i64) -> Profile {
        self.profile.time_nanos = time_nanos;
        self.profile.duration_nanos = duration_nanos;
        self.profile
    }
}

/// Several profiles of the same kind as one (e.g. the periodic profiles of a time range): their
/// samples side by side, strings, functions, locations and mappings re-interned. Sample types and
/// period come from the first; time spans from the earliest start to the latest end.
#[allow(
    dead_code,
    reason = "for the agent's `query --profile` (issue 5); tested here"
)]
pub fn merge(profiles: &[Profile]) -> Profile {
    merge_scaled(profiles.iter().map(|p| (p, 1)))
}

/// `compare` minus `base`, the way `go tool pprof -diff_base` shows a change: the base's samples
/// are added negated and labelled `pprof::base`, so pprof can still tell them apart.
#[allow(
    dead_code,
    reason = "for the agent's `diff` of profiles (issue 5); tested here"
)]
pub fn diff(base: &[Profile], compare: &[Profile]) -> Profile {
    merge_scaled(
        compare
            .iter()
            .map(|p| (p, 1))
            .chain(base.iter().map(|p| (p, -1))),
    )
}

fn merge_scaled<'a>(profiles: impl Iterator<Item = (&'a Profile, i64)>) -> Profile {
    let mut out: Option<ProfileBuilder> = None;
    let (mut start, mut end) = (i64::MAX, i64::MIN);
    for (p, sign) in profiles {
        let s = |i: i64| -> &str { p.string_table.get(i as usize).map_or("", String::as_str) };
        let b = out.get_or_insert_with(|| {
            let types: Vec<(&str, &str)> = p
                .sample_type
                .iter()
                .map(|t| (s(t.r#type), s(t.unit)))
                .collect();
            let period = p
                .period_type
                .as_ref()
                .map(|t| (s(t.r#type), s(t.unit), p.period));
            let mut b = ProfileBuilder::new(&types, period);
            b.profile.default_sample_type = p.default_sample_type;
            b
        });
        start = start.min(p.time_nanos);
        end = end.max(p.time_nanos.saturating_add(p.duration_nanos));
        for c in &p.comment {
            let text = s(*c).to_string();
            if !b
                .profile
                .comment
                .iter()
                .any(|&i| b.profile.string_table[i as usize] == text)
            {
                b.comment(&text);
            }
        }
        // Re-intern this profile's tables into the builder's.
        let mapping_ids: HashMap<u64, u64> = p
            .mapping
            .iter()
            .map(|m| {
                let id = b.mapping(&crate::symbolize::Mapping {
                    start: m.memory_start,
                    limit: m.memory_limit,
                    offset: m.file_offset,
                    file: s(m.filename).to_string(),
                    build_id: s(m.build_id).to_string(),
                });
                (m.id, id)
            })
            .collect();
        let functions: HashMap<u64, (&str, &str)> = p
            .function
            .iter()
            .map(|f| (f.id, (s(f.name), s(f.filename))))
            .collect();
        let locations: HashMap<u64, u64> = p
            .location
            .iter()
            .map(|l| {
                let lines: Vec<Line> = l
                    .line
                    .iter()
                    .map(|line| {
                        let (name, file) = functions
                            .get(&line.function_id)
                            .copied()
                            .unwrap_or(("?", ""));
                        Line {
                            function_id: b.function(name, file),
                            line: line.line,
                            column: line.column,
                        }
                    })
                    .collect();
                let mapping_id = mapping_ids.get(&l.mapping_id).copied().unwrap_or(0);
                (l.id, b.raw_location(mapping_id, l.address, lines))
            })
            .collect();
        for sample in &p.sample {
            let mut labels: Vec<(String, String)> = sample
                .label
                .iter()
                .map(|l| (s(l.key).to_string(), s(l.str).to_string()))
                .collect();
            if sign < 0 {
                labels.push(("pprof::base".into(), "true".into()));
            }
            let label_refs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let ids: Vec<u64> = sample
                .location_id
                .iter()
                .filter_map(|id| locations.get(id).copied())
                .collect();
            let values: Vec<i64> = sample.value.iter().map(|v| v * sign).collect();
            b.add_raw(ids, &values, &label_refs);
        }
    }
    match out {
        Some(b) => b.finish(start, end.saturating_sub(start)),
        // Nothing to merge: an empty CPU profile, which pprof still opens.
        None => ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            Some(("cpu", "nanoseconds", 0)),
        )
        .finish(0, 0),
    }
}

/// The profile, gzipped: what `go tool pprof` opens and what `/debug/pprof/profile` serves.
pub fn to_gzip(profile: &Profile) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()
}

pub fn write_file(profile: &Profile, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(path, to_gzip(profile)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Profiles archived by the agent, read back: the ranges' profiles merged (one range), or the
/// second minus the first (two), gzipped (`goprobe query --profile`, `/api/v1/profile`).
/// The archived CPU profiles of `records` (of process `pid`, or all), decoded.
pub fn decode_profiles(
    records: &[ProfileRecord],
    pid: Option<u32>,
) -> anyhow::Result<Vec<Profile>> {
    use prost::Message as _;
    records
        .iter()
        .filter(|r| pid.is_none_or(|p| p == r.pid))
        .map(|r| {
            let mut raw = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&r.pprof_gz[..]),
                &mut raw,
            )?;
            Ok(Profile::decode(&raw[..])?)
        })
        .collect()
}

/// The merged profile of a range (`diff`: compare minus base), gzipped.
pub fn answer_profile(
    archive: &Archive,
    ranges: &[Range],
    pid: Option<u32>,
) -> anyhow::Result<Vec<u8>> {
    let mut sets = Vec::new();
    for r in ranges {
        sets.push(decode_profiles(
            &archive.read_profiles(r.from_ms, r.to_ms)?,
            pid,
        )?);
    }
    let profile = match &sets[..] {
        [one] => merge(one),
        [base, compare] => diff(base, compare),
        _ => anyhow::bail!("one or two ranges"),
    };
    Ok(to_gzip(&profile)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::symbolize::{Line as SrcLine, Mapping as SrcMapping};

    fn loc(addr: u64, names: &[&str]) -> StackLocation {
        StackLocation {
            address: addr,
            kind: Kind::Go,
            mapping: Some(Arc::new(SrcMapping {
                start: 0x400000,
                limit: 0x500000,
                offset: 0,
                file: "/bin/app".into(),
                build_id: "abc".into(),
            })),
            lines: names
                .iter()
                .map(|n| SrcLine {
                    function: n.to_string(),
                    file: "main.go".into(),
                    line: 7,
                })
                .collect(),
        }
    }

    #[test]
    fn interns_and_round_trips() {
        let mut b = ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            Some(("cpu", "nanoseconds", 10_000_000)),
        );
        let leaf = loc(0x401000, &["main.inlined", "main.hot"]);
        let root = loc(0x402000, &["main.main"]);
        b.add(&[leaf.clone(), root.clone()], &[3, 30_000_000], &[]);
        b.add(&[leaf, root], &[1, 10_000_000], &[("pid", "7")]);
        let p = b.finish(1, 2);
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.location.len(), 2);
        assert_eq!(p.mapping.len(), 1);
        assert_eq!(p.function.len(), 3);
        assert_eq!(p.location[0].line.len(), 2, "inlined frame and its caller");
        assert_eq!(p.sample[0].location_id, vec![1, 2]);
        let bytes = to_gzip(&p).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw)
            .unwrap();
        assert_eq!(Profile::decode(&raw[..]).unwrap(), p);
    }

    #[test]
    fn merges_and_diffs() {
        let one = |n: i64, at: i64| {
            let mut b = ProfileBuilder::new(&[("samples", "count")], None);
            b.add(
                &[loc(0x401000, &["main.hot"]), loc(0x402000, &["main.main"])],
                &[n],
                &[],
            );
            b.finish(at, 10)
        };
        let merged = merge(&[one(2, 100), one(3, 200)]);
        assert_eq!(merged.sample.len(), 2);
        assert_eq!(merged.location.len(), 2, "same locations are merged");
        assert_eq!(merged.function.len(), 2);
        let total: i64 = merged.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 5);
        assert_eq!((merged.time_nanos, merged.duration_nanos), (100, 110));
        let d = diff(&[one(2, 100)], &[one(3, 200)]);
        let total: i64 = d.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 1);
        let base = d.sample.iter().find(|s| s.value[0] < 0).unwrap();
        assert_eq!(d.string_table[base.label[0].key as usize], "pprof::base");
    }
}

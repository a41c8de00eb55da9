//! `goprobe symbols`: the functions of a binary and how each would be probed.

use std::io::{self, Write};

use serde::Serialize;

use goprobe_inspect::{
    Arch, BinaryIndex, EntryKind, Function, NameSource, PclntabSource, ProbeSites, TextStartSource,
};

/// Longest NAME column we pad to; longer (generic) names overflow their row rather than pushing
/// every row of the table off the screen.
const MAX_NAME_WIDTH: usize = 72;

#[derive(Serialize)]
struct JsonRow<'a> {
    name: &'a str,
    addr: u64,
    size: u64,
    source: NameSource,
    entry_addr: Option<u64>,
    entry_kind: Option<EntryKind>,
    entry_file_offset: Option<u64>,
    ret_count: Option<usize>,
    ret_addrs: Option<&'a [u64]>,
    /// Where each RET is probed: the RET, or the NOP right before it.
    return_sites: Option<&'a [u64]>,
    tail_jumps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Write the functions whose name passes `filter`; returns how many were listed.
pub fn write_symbols(
    out: &mut dyn Write,
    index: &BinaryIndex,
    filter: &dyn Fn(&str) -> bool,
    json: bool,
) -> io::Result<usize> {
    let rows: Vec<(&Function, Result<ProbeSites, String>)> = index
        .functions
        .iter()
        .filter(|f| filter(&f.name))
        .map(|f| (f, index.probe_sites(f).map_err(|e| e.to_string())))
        .collect();
    if json {
        for (f, sites) in &rows {
            let ok = sites.as_ref().ok();
            let row = JsonRow {
                name: &f.name,
                addr: f.addr,
                size: f.size,
                source: f.source,
                entry_addr: ok.map(|s| s.entry),
                entry_kind: ok.map(|s| s.entry_kind),
                entry_file_offset: ok.and_then(|s| index.vaddr_to_file_offset(s.entry)),
                ret_count: ok.map(|s| s.returns.len()),
                ret_addrs: ok.map(|s| s.returns.as_slice()),
                return_sites: ok.map(|s| s.return_sites.as_slice()),
                tail_jumps: ok.map(|s| s.tail_jumps),
                error: sites.as_ref().err().cloned(),
            };
            serde_json::to_writer(&mut *out, &row).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        return Ok(rows.len());
    }

    writeln!(out, "{}", header_line(index))?;
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|(f, sites)| {
            let (entry, rets) = match sites {
                Ok(s) => {
                    let what = match (s.entry_kind, index.arch) {
                        (EntryKind::StackCheckBranch, Arch::Aarch64) => "b.ls",
                        (EntryKind::StackCheckBranch, _) => "jbe",
                        (EntryKind::FunctionStart, _) => "start",
                        (EntryKind::EmulatedPrefix, _) => "early",
                    };
                    (
                        format!("+{:#x} {what}", s.entry.wrapping_sub(f.addr)),
                        s.returns.len().to_string(),
                    )
                }
                Err(_) => ("-".to_string(), "-".to_string()),
            };
            [
                f.name.clone(),
                format!("{:#x}", f.addr),
                f.size.to_string(),
                f.source.as_str().to_string(),
                entry,
                rets,
            ]
        })
        .collect();
    let titles = ["NAME", "ADDRESS", "SIZE", "SOURCE", "ENTRY", "RETS"];
    let mut widths = titles.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    widths[0] = widths[0].min(MAX_NAME_WIDTH);
    let write_row = |out: &mut dyn Write, row: [&str; 6]| -> io::Result<()> {
        // Left-align text columns, right-align numbers.
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}  {:<w4$}  {:>w5$}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
            w5 = widths[5]
        );
        writeln!(out, "{}", line.trim_end())
    };
    write_row(out, titles)?;
    for row in &cells {
        write_row(out, [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])?;
    }
    let failed: Vec<&String> = rows.iter().filter_map(|(_, s)| s.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        writeln!(
            out,
            "note: no probe sites for {} of these functions ({first})",
            failed.len()
        )?;
    }
    writeln!(out, "{} functions", rows.len())?;
    Ok(rows.len())
}

fn header_line(index: &BinaryIndex) -> String {
    let (symtab, pclntab) = index.name_counts();
    let names = match (symtab, pclntab) {
        (0, _) => "names from .gopclntab (no .symtab)".to_string(),
        (_, 0) => "names from .symtab".to_string(),
        (s, p) => format!("names from .symtab ({s}) and .gopclntab ({p})"),
    };
    // Say how the table was found when it took a fallback, since those are less certain.
    let pcln = index.pclntab_info().map_or(String::new(), |p| {
        let found = match p.source {
            PclntabSource::Section(_) => "",
            PclntabSource::Symbol => " (located by the runtime.pclntab symbol)",
            PclntabSource::Scan => " (located by scanning: no section or symbol)",
        };
        let text = match p.text_start_source {
            TextStartSource::TextSection => ", runtime.text assumed at the .text section start",
            _ => "",
        };
        format!(", pclntab {}{found}{text}", p.version)
    });
    format!(
        "{}: {}, build id {}, {}, {}, {}{}",
        index.path.display(),
        index.go_version.as_deref().unwrap_or("unknown Go version"),
        index.build_id.as_deref().unwrap_or("none"),
        index.arch,
        if index.pie { "PIE" } else { "not PIE" },
        names,
        pcln
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use goprobe_inspect::testelf::ElfSpec;

    fn index(spec: ElfSpec) -> BinaryIndex {
        BinaryIndex::parse("/bin/synthetic".into(), spec.build()).unwrap()
    }

    #[test]
    fn text_table() {
        let idx = index(ElfSpec {
            symtab: false,
            ..ElfSpec::default()
        });
        let mut out = Vec::new();
        let n = write_symbols(&mut out, &idx, &|n| n.starts_with("main."), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(n, 3);
        assert_eq!(
            lines[0],
            "/bin/synthetic: go1.27.3, build id synthetic-go-build-id, x86-64, not PIE, names from .gopclntab (no .symtab), pclntab go1.20+"
        );
        assert_eq!(
            lines[1],
            "NAME        ADDRESS  SIZE  SOURCE   ENTRY       RETS"
        );
        assert_eq!(
            lines[2],
            "main.leaf  0x401000    32  pclntab  +0x0 start     1"
        );
        assert_eq!(
            lines[3],
            "main.foo   0x401020    64  pclntab  +0x4 jbe       1"
        );
        assert_eq!(lines.last(), Some(&"3 functions"));
    }

    #[test]
    fn json_lines() {
        let idx = index(ElfSpec::default());
        let mut out = Vec::new();
        let n = write_symbols(&mut out, &idx, &|n| n == "main.foo", true).unwrap();
        assert_eq!(n, 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["name"], "main.foo");
        assert_eq!(v["addr"], 0x401020);
        assert_eq!(v["source"], "symtab");
        assert_eq!(v["entry_kind"], "stack_check_branch");
        assert_eq!(v["entry_addr"], 0x401024);
        assert_eq!(v["entry_file_offset"], 0x1024);
        assert_eq!(v["ret_count"], 1);
        assert_eq!(v["ret_addrs"], serde_json::json!([0x401031]));
    }

    #[test]
    fn undecodable_functions_are_listed_with_a_note() {
        let idx = index(ElfSpec {
            machine: object::elf::EM_AARCH64,
            ..ElfSpec::default()
        });
        let mut out = Vec::new();
        write_symbols(&mut out, &idx, &|_| true, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("note: no probe sites for 3 of these functions (undecodable instruction at 0x401000)"), "{text}");
        assert!(text.ends_with("3 functions\n"));
        let mut out = Vec::new();
        write_symbols(&mut out, &idx, &|n| n == "main.foo", true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["entry_addr"].is_null() && v["error"].is_string());
    }
}

#[derive(Serialize)]
struct JsonInlined<'a> {
    kind: &'static str,
    name: &'a str,
    caller: &'a str,
    call_site: String,
    ranges: Vec<[u64; 2]>,
    entry_addrs: Option<&'a [u64]>,
    exit_addrs: Option<&'a [u64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Write the inlined copies of the functions whose name passes `filter`: which function holds
/// each, where the inlined call is written, its code ranges, and its entry and exit sites.
/// Returns how many were listed.
pub fn write_inlined(
    out: &mut dyn Write,
    index: &BinaryIndex,
    filter: &dyn Fn(&str) -> bool,
    json: bool,
) -> io::Result<usize> {
    let copies = index.inlined_copies(filter);
    let rows: Vec<_> = copies
        .iter()
        .map(|c| (c, index.inline_sites(c).map_err(|e| e.to_string())))
        .collect();
    if json {
        for (c, sites) in &rows {
            let ok = sites.as_ref().ok();
            let row = JsonInlined {
                kind: "inlined",
                name: &c.name,
                caller: &c.caller,
                call_site: format!("{}:{}", c.call_file, c.call_line),
                ranges: c.ranges.iter().map(|&(s, e)| [s, e]).collect(),
                entry_addrs: ok.map(|s| s.entries.as_slice()),
                exit_addrs: ok.map(|s| s.exits.as_slice()),
                error: sites.as_ref().err().cloned(),
            };
            serde_json::to_writer(&mut *out, &row).map_err(io::Error::other)?;
            writeln!(out)?;
        }
        return Ok(rows.len());
    }
    if rows.is_empty() {
        return Ok(0);
    }
    writeln!(out)?;
    writeln!(
        out,
        "Inlined copies (probed where their code is entered and left):"
    )?;
    let name_w = rows
        .iter()
        .map(|(c, _)| c.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, MAX_NAME_WIDTH);
    let caller_w = rows
        .iter()
        .map(|(c, _)| c.caller.len())
        .max()
        .unwrap_or(6)
        .clamp(6, MAX_NAME_WIDTH);
    writeln!(
        out,
        "{:<name_w$}  {:<caller_w$}  {:<8}  {:<7}  {:<5}  CALL SITE / RANGES",
        "NAME", "CALLER", "ENTRIES", "EXITS", "RANGES"
    )?;
    for (c, sites) in &rows {
        let (entries, exits) = match sites {
            Ok(s) => (s.entries.len().to_string(), s.exits.len().to_string()),
            Err(_) => ("-".into(), "-".into()),
        };
        let ranges: Vec<String> = c
            .ranges
            .iter()
            .map(|(s, e)| format!("{s:#x}-{e:#x}"))
            .collect();
        writeln!(
            out,
            "{:<name_w$}  {:<caller_w$}  {entries:<8}  {exits:<7}  {:<5}  {}:{} {}",
            c.name,
            c.caller,
            c.ranges.len(),
            c.call_file,
            c.call_line,
            ranges.join(",")
        )?;
        if let Err(e) = sites {
            writeln!(out, "    cannot probe: {e}")?;
        }
    }
    writeln!(out, "{} inlined copies", rows.len())?;
    Ok(rows.len())
}

//! Inspection time: what it takes goprobe to read a large stripped Go binary from Debian before
//! it can attach (its index of every function, then the plan for one), and to list every
//! function and inlined copy, against Go's own debug/gosym reading the same table: wall time and
//! peak memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use super::Env;
use super::proc;
use super::report::{notes, table_head};
use super::stats::{fmt_summary, secs, thousands};
use crate::util;

pub struct InspectRow {
    pub binary: PathBuf,
    pub size_mib: f64,
    pub functions: usize,
    /// tool -> (seconds, peak RSS MiB) per repetition.
    pub runs: BTreeMap<&'static str, Vec<(f64, f64)>>,
}

pub struct InspectReport {
    pub rows: Vec<InspectRow>,
    notes: Vec<String>,
}

pub const GOPROBE_INDEX: &str = "goprobe: index, plan one function";
const GOPROBE_SYMBOLS: &str = "goprobe symbols --json: every function and inlined copy";
pub const GOSYM: &str = "Go debug/gosym (gosymref): every function";

pub fn measure(env: &Env) -> Result<InspectReport> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for binary in &env.servers {
        let size_mib = std::fs::metadata(binary)?.len() as f64 / (1 << 20) as f64;
        let functions = util::stdout(util::cmd(&env.gosymref).arg(binary))?
            .lines()
            .count();
        let mut row = InspectRow {
            binary: binary.clone(),
            size_mib,
            functions,
            runs: BTreeMap::new(),
        };
        for rep in 0..env.plan.inspect_reps {
            for tool in [GOPROBE_INDEX, GOPROBE_SYMBOLS, GOSYM] {
                eprintln!(
                    "bench: inspect {} rep {}: {tool}",
                    binary.display(),
                    rep + 1
                );
                let mut c = match tool {
                    GOSYM => util::cmd(&env.gosymref),
                    _ => util::cmd(&env.goprobe),
                };
                match tool {
                    GOSYM => c.arg(binary),
                    GOPROBE_INDEX => c.arg("symbols").arg(binary).arg("runtime.main"),
                    _ => c.args(["symbols", "--json"]).arg(binary),
                };
                match proc::time_command(&mut c) {
                    Ok((secs, kib)) => row
                        .runs
                        .entry(tool)
                        .or_default()
                        .push((secs, kib as f64 / 1024.0)),
                    Err(e) => notes.push(format!("{}, {tool}: {e:#}", binary.display())),
                }
            }
        }
        rows.push(row);
    }
    Ok(InspectReport { rows, notes })
}

pub fn render(w: &mut String, i: &InspectReport) {
    let _ = writeln!(w, "## Inspection time\n");
    let _ = writeln!(
        w,
        "Indexing a large stripped Go binary from Debian: wall time and peak RSS (GNU time's `%M`), \
         output to /dev/null. `goprobe symbols BIN runtime.main` is what every `goprobe \
         funclatency` does first: read the ELF and `.gopclntab` into an index of every function, \
         then decode the functions that match. `goprobe symbols --json BIN` decodes every \
         function and lists every inlined copy too (from the inline trees). The baseline is \
         `gosymref BIN` (`tests/go/gosymref`: Go's own `debug/elf` + `debug/gosym`, built by Go \
         1.27), which reads the same table and lists every function. `functions` is gosymref's \
         count.\n"
    );
    table_head(w, "| binary | size | functions | what | time | peak RSS |");
    for r in &i.rows {
        for (tool, runs) in &r.runs {
            let _ = writeln!(
                w,
                "| {} | {:.1} MiB | {} | {tool} | {} | {} |",
                r.binary.display(),
                r.size_mib,
                thousands(r.functions as u64),
                fmt_summary(&runs.iter().map(|x| x.0).collect::<Vec<_>>(), secs),
                fmt_summary(&runs.iter().map(|x| x.1).collect::<Vec<_>>(), |v| format!(
                    "{v:.0} MiB"
                ))
            );
        }
    }
    let _ = writeln!(w);
    notes(w, &i.notes);
}

//! Attach time: how long goprobe takes to attach to 1 to 10,000 functions of a large stripped
//! Go server, chosen by package as a user would, and to detach from them, with uprobe_multi and
//! with one uprobe per site, against bpftrace's uprobe + uretprobe on the same functions. Where
//! detaching per-site uprobes would take too long to run, the table extrapolates it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::Env;
use super::json::Json;
use super::proc::Proc;
use super::report::{notes, table_head};
use super::stats::{fmt_summary, secs, summarize, thousands};
use crate::util;

pub struct AttachRow {
    /// Functions asked for (goprobe says how many it traces).
    pub target: usize,
    pub functions: usize,
    pub sites: usize,
    /// tool -> (attach s, detach s) per repetition.
    pub times: BTreeMap<&'static str, Vec<(f64, f64)>>,
    per_site_note: Option<String>,
    bpftrace_note: Option<String>,
}

pub struct AttachReport {
    pub binary: PathBuf,
    pub rows: Vec<AttachRow>,
    notes: Vec<String>,
}

pub const MULTI: &str = "goprobe, uprobe_multi";
const PER_SITE: &str = "goprobe, one uprobe per site";
const BPFTRACE: &str = "bpftrace, uprobe + uretprobe";

pub fn measure(env: &Env) -> Result<AttachReport> {
    let plan = &env.plan;
    let binary = env.servers[0].clone();
    let symbols = util::stdout(
        util::cmd(&env.goprobe)
            .args(["symbols", "--json"])
            .arg(&binary),
    )?;
    // Traceable functions by package: those with a RET and decodable code.
    let mut by_package: BTreeMap<String, Vec<Traceable>> = BTreeMap::new();
    for line in symbols.lines() {
        let j = Json::parse(line)?;
        if j.get("error").is_some() || j.u64("ret_count").unwrap_or(0) == 0 {
            continue;
        }
        let name = j.str("name").unwrap_or_default().to_string();
        // The runtime's own functions include some goprobe refuses; `type:`/`type..` and
        // `go:`/`go.` are the compiler's generated functions, not packages.
        if ["runtime.", "type:", "type.", "go:", "go."]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let sites = 1 + j.u64("ret_count").unwrap_or(0) as usize;
        by_package
            .entry(package_of(&name).to_string())
            .or_default()
            .push((name, j.u64("addr").unwrap_or(0), sites));
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &n in &plan.attach_sizes {
        let (pattern, regex, chosen) = choose_functions(&by_package, n);
        let mut row = AttachRow {
            target: n,
            functions: chosen.len(),
            sites: chosen.iter().map(|c| c.2).sum(),
            times: BTreeMap::new(),
            per_site_note: None,
            bpftrace_note: None,
        };
        let per_site = n <= plan.per_site_attach_max;
        // One repetition at N > 1 of what takes long.
        let slow_reps = if n <= 1 { plan.attach_reps } else { 1 };
        for rep in 0..plan.attach_reps {
            for (tool, mode) in [(MULTI, "multi"), (PER_SITE, "single")] {
                if tool == PER_SITE && (!per_site || rep >= slow_reps) {
                    continue;
                }
                eprintln!(
                    "bench: attach N={n} rep {}/{}: {tool}",
                    rep + 1,
                    plan.attach_reps
                );
                let mut c = util::cmd(&env.goprobe);
                c.arg("funclatency").arg("-b").arg(&binary);
                if regex {
                    c.arg("-r");
                }
                c.arg(format!("go:{pattern}")).env("GOPROBE_ATTACH", mode);
                match time_attach(c, "goprobe", |l| l.starts_with("Tracing ")) {
                    Ok((attach, detach, line)) => {
                        row.times.entry(tool).or_default().push((attach, detach));
                        if let Some(k) = line
                            .split_whitespace()
                            .nth(1)
                            .and_then(|k| k.parse::<usize>().ok())
                        {
                            row.functions = k;
                        }
                    }
                    Err(e) => notes.push(format!("N={n}, {tool}: {e:#}")),
                }
            }
            let bpftrace = n <= plan.bpftrace_attach_max;
            if bpftrace && rep < slow_reps {
                eprintln!("bench: attach N={n} rep {}: {BPFTRACE}", rep + 1);
                let mut script = String::new();
                for kind in ["uprobe", "uretprobe"] {
                    let probes: Vec<String> = chosen
                        .iter()
                        .map(|(_, addr, _)| format!("{kind}:{}:{addr:#x}", binary.display()))
                        .collect();
                    let _ = writeln!(
                        script,
                        "{} {{ @{kind}[probe] = count(); }}",
                        probes.join(",\n")
                    );
                }
                // Probes attach in the order of the script: this one fires once all are in.
                script.push_str("interval:ms:1 { printf(\"attached\\n\"); exit(); }\n");
                let dir = util::root().join("target/bench");
                std::fs::create_dir_all(&dir)?;
                let file = dir.join(format!("attach-{n}.bt"));
                std::fs::write(&file, &script)?;
                let mut c = util::cmd("bpftrace");
                // --unsafe: addresses in a stripped binary (they are function starts).
                c.arg("--unsafe")
                    .arg(&file)
                    .env("BPFTRACE_MAX_PROBES", "100000");
                match time_attach(c, "bpftrace", |l| l == "attached") {
                    Ok((attach, detach, _)) => row
                        .times
                        .entry(BPFTRACE)
                        .or_default()
                        .push((attach, detach)),
                    Err(e) => notes.push(format!("N={n}, bpftrace: {e:#}")),
                }
            }
            if !per_site {
                row.per_site_note = Some(format!(
                    "not run beyond {} functions: the kernel unregisters perf-event uprobes \
                     one after the other, each waiting for RCU grace periods",
                    plan.per_site_attach_max
                ));
            }
            if !bpftrace {
                row.bpftrace_note = Some(format!(
                    "not run beyond {} functions: bpftrace closes its perf-event uprobes one \
                     after the other, each waiting for RCU grace periods",
                    plan.bpftrace_attach_max
                ));
            }
        }
        rows.push(row);
    }
    Ok(AttachReport {
        binary,
        rows,
        notes,
    })
}

/// Starts a tracer, times it to the line that says it is attached, then interrupts it and
/// times its exit: (attach s, detach s, the line).
fn time_attach(
    mut c: Command,
    name: &str,
    ready: impl Fn(&str) -> bool + Copy,
) -> Result<(f64, f64, String)> {
    let mut p = Proc::spawn(name, &mut c)?;
    let (t, line) = p.expect_line("attached line", ready, Duration::from_secs(600))?;
    let attach = t.duration_since(p.started).as_secs_f64();
    let detach = if p.running() {
        p.interrupt(Duration::from_secs(600))?.1.as_secs_f64()
    } else {
        let t2 = Instant::now();
        p.wait(Duration::from_secs(600))?;
        t2.duration_since(t).as_secs_f64()
    };
    Ok((attach, detach, line))
}

/// A traceable function: name, address, probe sites (1 entry + its RETs).
type Traceable = (String, u64, usize);

/// Go's package of a function name: up to the first '.' after the last '/'.
fn package_of(name: &str) -> &str {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].find('.') {
        Some(dot) => &name[..slash + dot],
        None => name,
    }
}

/// A pattern that selects about `n` functions, as a user would: whole packages (a regular
/// expression over their names), or one function by name for n = 1. Returns (pattern,
/// whether it is a regex, the functions).
fn choose_functions(
    by_package: &BTreeMap<String, Vec<Traceable>>,
    n: usize,
) -> (String, bool, Vec<Traceable>) {
    if n <= 1 {
        let f = by_package
            .get("net/http")
            .and_then(|v| v.iter().find(|f| f.0 == "net/http.(*conn).serve"))
            .or_else(|| by_package.values().next().and_then(|v| v.first()))
            .cloned()
            .expect("a Go binary has functions");
        return (f.0.clone(), false, vec![f]);
    }
    // Largest packages first, skipping those that would overshoot by more than 2 %.
    let mut packages: Vec<_> = by_package.iter().collect();
    packages.sort_by_key(|(name, fs)| (std::cmp::Reverse(fs.len()), (*name).clone()));
    let mut chosen = Vec::new();
    let mut names = Vec::new();
    let limit = n + n / 50;
    for (name, fs) in packages {
        if chosen.len() + fs.len() <= limit {
            chosen.extend(fs.iter().cloned());
            names.push(regex_escape(name));
        }
        if chosen.len() + chosen.len() / 50 >= n {
            break;
        }
    }
    (format!("^(?:{})\\.", names.join("|")), true, chosen)
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What detaching `row`'s probes would take with `tool`, scaled from the largest N it ran: its
/// cost grows with the number of perf-event uprobes (goprobe's sites; bpftrace's uprobe and
/// uretprobe per function).
fn extrapolated_detach(a: &AttachReport, row: &AttachRow, tool: &str) -> Option<f64> {
    let probes = |r: &AttachRow| {
        if tool == BPFTRACE {
            2 * r.functions
        } else {
            r.sites
        }
    };
    let measured = a
        .rows
        .iter()
        .filter(|r| r.times.contains_key(tool))
        .max_by_key(|r| probes(r))?;
    let detach = summarize(&measured.times[tool].iter().map(|t| t.1).collect::<Vec<_>>())?.median;
    Some(detach * probes(row) as f64 / probes(measured).max(1) as f64)
}

pub fn render(w: &mut String, a: &AttachReport) {
    let _ = writeln!(w, "## Attach time\n");
    let _ = writeln!(
        w,
        "From starting the tracer to its saying it is attached (goprobe: the `Tracing N functions` \
         line; bpftrace: an `interval` probe placed after all others prints a line on its first \
         tick), then from SIGINT to its exit (detach). goprobe: `goprobe funclatency -b {bin} \
         [-r] 'go:PATTERN'`, with `GOPROBE_ATTACH=multi` (one uprobe_multi link per program) or \
         `single` (one perf-event uprobe per site); the pattern names one function for N = 1, \
         otherwise whole packages (`^(?:net/http|crypto/tls|...)\\.`) adding up to about N \
         functions. Each goprobe function has 1 entry site and one per RET. bpftrace: a \
         `uprobe` and a `uretprobe` on each of the same functions, by address (`--unsafe`: the \
         binary is stripped), as a latency script would.\n",
        bin = a.binary.display()
    );
    table_head(
        w,
        "| N asked | functions | goprobe sites | tracer | attach | detach |",
    );
    for r in &a.rows {
        for tool in [MULTI, PER_SITE, BPFTRACE] {
            let (att, det) = match r.times.get(tool) {
                Some(v) => (
                    fmt_summary(&v.iter().map(|t| t.0).collect::<Vec<_>>(), secs),
                    fmt_summary(&v.iter().map(|t| t.1).collect::<Vec<_>>(), secs),
                ),
                None if tool != MULTI => (
                    if tool == BPFTRACE {
                        r.bpftrace_note.clone()
                    } else {
                        r.per_site_note.clone()
                    }
                    .unwrap_or_else(|| "–".into()),
                    extrapolated_detach(a, r, tool)
                        .map(|s| format!("about {} (extrapolated)", secs(s)))
                        .unwrap_or_default(),
                ),
                None => ("–".into(), String::new()),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {tool} | {att} | {det} |",
                thousands(r.target as u64),
                thousands(r.functions as u64),
                thousands(r.sites as u64)
            );
        }
    }
    let _ = writeln!(w);
    notes(w, &a.notes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_of_go_names() {
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(package_of("strconv.ryuFtoaFixed32"), "strconv");
        assert_eq!(
            package_of("github.com/caddyserver/caddy/v2.(*App).Start"),
            "github.com/caddyserver/caddy/v2"
        );
        assert_eq!(
            package_of("gopkg.in/yaml%2ev3.Marshal"),
            "gopkg.in/yaml%2ev3"
        );
    }

    #[test]
    fn regex_escapes() {
        assert_eq!(regex_escape("gopkg.in/yaml.v3"), "gopkg\\.in/yaml\\.v3");
    }
}

//! What a probe costs, per instruction: a probe that does nothing on one instruction at a time,
//! of a Go function and of an assembly function, and the ns it adds per call. It shows the two
//! prices of a uprobe (an instruction the kernel emulates, or one it single-steps), which is why
//! goprobe places its probes where it does; the rules follow the table.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::Env;
use super::insns::{Insn, insns};
use super::report::{notes, table_head};
use super::runner::{ONE_THREAD, Tracer, run_program};
use super::stats::{fmt_summary, ns, summarize, thousands};

pub struct SiteRow {
    function: String,
    text: String,
    bytes: String,
    kernel_emulates: bool,
    goprobe_use: String,
    added: Vec<f64>,
}

pub struct SitesReport {
    /// Calls per run.
    calls: usize,
    rows: Vec<SiteRow>,
    notes: Vec<String>,
}

pub fn measure(env: &Env) -> Result<SitesReport> {
    let plan = &env.plan;
    let call = insns(env, &env.bench, "main.goprobeBenchCall")?;
    let asm_all = insns(env, &env.bench, "main.goprobeBenchAsm")?;
    // The assembly function itself (the other one of that name is its ABI wrapper).
    let asm_addr = asm_all
        .iter()
        .find(|i| i.bytes == "0f1f440000")
        .map(|i| i.function_addr)
        .context("no 5-byte NOP in main.goprobeBenchAsm")?;
    let mut chosen: Vec<(&'static str, &Insn)> = Vec::new();
    let mut seen = Vec::new();
    // Every kind of instruction of the stack-check function up to its RET (what follows is
    // the morestack path, not run).
    for i in &call {
        if !seen.contains(&i.mnemonic) {
            seen.push(i.mnemonic.clone());
            chosen.push(("call", i));
        }
        if i.mnemonic == "ret" {
            break;
        }
    }
    // From the assembly function: NOPs of every length, a jcc not taken and a jmp.
    for i in asm_all.iter().filter(|i| i.function_addr == asm_addr) {
        let wanted =
            (i.mnemonic == "nop" && i.bytes != "90") || i.mnemonic == "je" || i.mnemonic == "jmp";
        if wanted {
            chosen.push(("asm", i));
        }
    }
    let mut rows: Vec<SiteRow> = chosen
        .iter()
        .map(|(mode, i)| SiteRow {
            function: if *mode == "call" {
                "main.goprobeBenchCall".into()
            } else {
                "main.goprobeBenchAsm (assembly)".into()
            },
            text: i.text.clone(),
            bytes: i.bytes.clone(),
            kernel_emulates: i.kernel_emulates,
            goprobe_use: match (i.goprobe_entry.as_deref(), i.goprobe_return) {
                (Some("stack_check_branch"), _) => "entry (stack-check branch)".into(),
                (Some(_), _) => "entry".into(),
                (None, true) => "return".into(),
                _ => String::new(),
            },
            added: Vec::new(),
        })
        .collect();
    let mut notes = Vec::new();
    for rep in 0..plan.reps {
        for mode in ["call", "asm"] {
            let args = vec![
                "-mode".to_string(),
                mode.to_string(),
                "-n".to_string(),
                plan.site_calls.to_string(),
            ];
            eprintln!(
                "bench: sites rep {}/{}: {mode} untraced",
                rep + 1,
                plan.reps
            );
            let base = run_program(env, &env.bench, &args, &ONE_THREAD, &Tracer::None, "")?
                .result
                .f64("ns_per_call")
                .unwrap_or(f64::NAN);
            for (row, (m, insn)) in rows.iter_mut().zip(&chosen) {
                if *m != mode {
                    continue;
                }
                eprintln!("bench: sites rep {}/{}: {}", rep + 1, plan.reps, insn.text);
                let tracer = Tracer::Bare(vec![insn.offset]);
                match run_program(env, &env.bench, &args, &ONE_THREAD, &tracer, "") {
                    Ok(out) => row
                        .added
                        .push(out.result.f64("ns_per_call").unwrap_or(f64::NAN) - base),
                    Err(e) => {
                        row.added.push(f64::NAN);
                        notes.push(format!("{}: {e:#}", insn.text));
                    }
                }
            }
        }
    }
    Ok(SitesReport {
        calls: plan.site_calls,
        rows,
        notes,
    })
}

pub fn render(w: &mut String, s: &SitesReport) {
    let _ = writeln!(w, "## What a probe costs, per instruction\n");
    let _ = writeln!(
        w,
        "A probe that does nothing (`goprobe dev attach`) on one instruction of \
         `main.goprobeBenchCall` (Go 1.27) or of the assembly function `main.goprobeBenchAsm`, \
         {} calls per run: the ns it adds per call. \"Emulated\" is what goprobe's decoder \
         believes (`kernel_emulates` in `goprobe-inspect/src/disasm/x86_64.rs`): the x86 kernel emulates a \
         uprobe on a relative `jmp`/`jcc`/`call`, a `push` and the NOPs of its `x86_nops` table \
         (one trap), and copies every other instruction out of line and single-steps it (a trap, \
         then a single-step trap). On this virtual machine the single-step trap is the expensive \
         part, and it varies with the host's load.\n",
        thousands(s.calls as u64)
    );
    table_head(
        w,
        "| function | instruction | bytes | emulated | added per call | goprobe uses it as |",
    );
    for r in &s.rows {
        let _ = writeln!(
            w,
            "| {} | `{}` | `{}` | {} | {} | {} |",
            r.function,
            r.text,
            r.bytes,
            if r.kernel_emulates { "yes" } else { "no" },
            fmt_summary(&r.added, ns),
            r.goprobe_use
        );
    }
    let _ = writeln!(w);
    let emulated: Vec<f64> = s
        .rows
        .iter()
        .filter(|r| r.kernel_emulates)
        .filter_map(|r| summarize(&r.added).map(|x| x.median))
        .collect();
    let stepped: Vec<f64> = s
        .rows
        .iter()
        .filter(|r| !r.kernel_emulates)
        .filter_map(|r| summarize(&r.added).map(|x| x.median))
        .collect();
    if let (Some(e), Some(st)) = (summarize(&emulated), summarize(&stepped)) {
        let _ = writeln!(
            w,
            "Emulated sites: {} per call (median over the emulated rows, {}–{}); single-stepped \
             sites: {} ({}–{}), {:.0}× as much.\n",
            ns(e.median),
            ns(e.min),
            ns(e.max),
            ns(st.median),
            ns(st.min),
            ns(st.max),
            st.median / e.median
        );
    }
    let _ = writeln!(w, "### Where goprobe places its probes\n");
    let _ = writeln!(w, "{PLACEMENT}");
    notes(w, &s.notes);
}

/// The placement rules, as implemented in `goprobe-inspect/src/disasm/x86_64.rs` and `goprobe/src/plan/mod.rs`.
const PLACEMENT: &str = "\
- **Entry, functions with Go's stack check** (`cmp rsp,[r14+0x10]; jbe morestack`, or the \
large-frame forms): on the `jbe`. The kernel emulates it, and at that point `regs->eflags` tells \
the two paths apart: CF=0 and ZF=0 is a call that proceeds; CF=1 or ZF=1 is one about to call \
`morestack`, which grows the stack and re-enters the function from its first instruction. The \
kernel program ignores the latter (counter `morestack_skipped`), so each call counts once.
- **Entry, functions without a stack check** (frameless leaves, `NOSPLIT` assembly): the first \
instruction the kernel emulates on the function's straight-line start — a `jcc`, `jmp`, `call`, \
`push` or NOP within the first 16 instructions — provided nothing before it changes `rsp` and no \
branch lands anywhere from the start up to it (so every call passes it exactly once, with the \
stack pointer it had on entry; this also rules out a stack check the decoder did not recognise, \
whose `morestack` path jumps back to the start). Otherwise the first instruction, single-stepped \
unless it is itself emulated (Go ≥ 1.21 frames start with `push rbp`). `goprobe symbols` shows \
such entries as `early`.
- **Returns**: every `ret`, found by decoding the whole function (never a uretprobe). A `ret` \
right after a NOP the kernel emulates (Go's alignment padding) is probed on the NOP instead, \
when no branch goes to the `ret` itself and the function has no jump table: every path to the \
`ret` runs the NOP, at the same stack pointer.
- **A cheaper return site in general: none on this kernel.** Only the instruction classes \
above are emulated; Go's epilogue (`add rsp,N; pop rbp; ret`) has none of them, and a probe in \
the caller after the call would miss calls through function values and interfaces. A uprobe \
program that executes the `ret` itself (set `rip` to the return address, `rsp += 8`; Linux \
then skips the single-step) would make every return site as cheap as an emulated one; this \
kernel's verifier refuses writes to the uprobe context (`invalid bpf_context access off=128`), \
so it is not implemented.";

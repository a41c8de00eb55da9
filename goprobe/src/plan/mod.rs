//! From a pattern and an inspected binary to probe sites: which functions match, where each one's
//! entry and return probes go (as file offsets, which is what uprobes take), and which matched
//! functions cannot be traced, with the reason.
pub mod args;
pub mod split;

pub use goprobe_input::pattern::Pattern;

use crate::inspect::{BinaryIndex, EntryKind, Function, inline::InlinedCopy};

/// Where to probe one function, as file offsets in its binary.
#[derive(Debug, Clone)]
pub struct FunctionPlan {
    pub name: String,
    pub entry_offset: u64,
    /// The entry is the stack-check `jbe`: the kernel side must filter the morestack path.
    pub check_eflags: bool,
    pub return_offsets: Vec<u64>,
    /// What one traced call costs the program, estimated from where its probes sit
    /// ([`site_cost_ns`]): its entry site and its dearest return site.
    pub call_cost_ns: u64,
    /// `--by`: what the entry site reads from the arguments.
    pub args: Option<goprobe_common::ArgSpec>,
}

/// What one probe hit costs the traced program, in ns, by how the kernel handles the probed
/// instruction, as BENCHMARKS.md measured it ("What a probe costs, per instruction"): an
/// instruction the kernel emulates (a branch, call, push or NOP on x86-64; branches and `ret`,
/// which arm64 simulates) about 560 ns, one it single-steps about 9.1 µs; goprobe's program adds
/// about 250 ns to either. The overhead budget ([`crate::engine::budget`]) prices calls with it.
pub fn site_cost_ns(emulated: bool) -> u64 {
    const PROGRAM_NS: u64 = 250;
    if emulated {
        560 + PROGRAM_NS
    } else {
        9_100 + PROGRAM_NS
    }
}

/// What one execution of an inlined copy costs: its boundary sites sit on whatever instruction
/// the copy begins and ends at, so both are priced as single-stepped.
pub const INLINE_COPY_COST_NS: u64 = 2 * 9_350;

/// A matched function that goprobe will not trace, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub name: String,
    pub reason: String,
}

/// Where to probe one inlined copy of a function, as file offsets.
#[derive(Debug, Clone)]
pub struct InlinePlan {
    pub name: String,
    pub entry_offsets: Vec<u64>,
    pub exit_offsets: Vec<u64>,
    /// The call the copy stands for.
    pub call: InlineCall,
}

/// Where an inlined call is written: a stack walked where the copy ends (`funclatency
/// --stacks`) starts here, whatever other inlined code the exit's PC belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InlineCall {
    /// The function whose machine code holds the copy.
    pub caller: String,
    pub file: String,
    pub line: u32,
    /// File offset of the PC that stands for the call (see `InlinedCopy::call_pc`), if known.
    pub offset: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct BinaryPlan {
    pub functions: Vec<FunctionPlan>,
    /// Inlined copies of matching functions (the pclntab's inline trees, Go >= 1.18).
    pub inlined: Vec<InlinePlan>,
    pub refused: Vec<Refusal>,
    /// Entry site of `runtime.goexit1` (offset, check eflags), where every exiting goroutine
    /// passes: the kernel side drops entries it left open there (panics, `runtime.Goexit`).
    pub goroutine_exit: Option<(u64, bool)>,
    /// Entry site of `runtime.copystack(gp, newsize)`, the only way Go moves a live goroutine's
    /// stack: there the kernel side forgets the `g.stack.hi` it keeps for `gp`. Only where `gp`
    /// is still in rax (the stack-check branch or the first instruction).
    pub stack_move: Option<u64>,
    /// The runtime sites of `funclatency --split`, when asked for.
    pub split: Option<split::SplitPlan>,
}

/// Runtime functions that switch stacks or run without a user goroutine: their entries and
/// returns cannot be paired per goroutine, and some run in signal context.
const UNPAIRABLE_RUNTIME: &[&str] = &[
    "runtime.morestack",
    "runtime.morestack_noctxt",
    "runtime.mcall",
    "runtime.systemstack",
    "runtime.systemstack_switch",
    "runtime.gogo",
    "runtime.goexit",
    "runtime.goexit0",
    "runtime.rt0_go",
    "runtime.asmcgocall",
    "runtime.asmcgocall_no_g",
    "runtime.cgocallback",
    "runtime.sigtramp",
    "runtime.cgoSigtramp",
    "runtime.sigreturn__sigaction",
    "runtime.mstart",
    "runtime.mstart0",
    "runtime.gosave_systemstack_switch",
    "runtime.abort",
];

pub fn plan_binary(
    index: &BinaryIndex,
    pattern: &Pattern,
    requests: &args::ArgRequests,
) -> BinaryPlan {
    let goroutine_exit = index
        .find("runtime.goexit1")
        .and_then(|f| index.probe_sites(f).ok())
        .and_then(|sites| {
            let offset = index.vaddr_to_file_offset(sites.entry)?;
            Some((offset, sites.entry_kind == EntryKind::StackCheckBranch))
        });
    let stack_move = index
        .find("runtime.copystack")
        .and_then(|f| index.probe_sites(f).ok())
        .filter(|sites| {
            matches!(
                sites.entry_kind,
                EntryKind::StackCheckBranch | EntryKind::FunctionStart
            )
        })
        .and_then(|sites| index.vaddr_to_file_offset(sites.entry));
    let mut plan = BinaryPlan {
        goroutine_exit,
        stack_move,
        ..BinaryPlan::default()
    };
    for function in index.functions.iter().filter(|f| pattern.matches(&f.name)) {
        let request = args::request_for(requests, &function.name);
        let planned = plan_function(index, function, request.is_some()).and_then(|mut p| {
            if let Some(request) = request {
                p.args = Some(args::plan_args(index, &function.name, request)?);
            }
            Ok(p)
        });
        match planned {
            Ok(p) => plan.functions.push(p),
            Err(reason) => plan.refused.push(Refusal {
                name: function.name.clone(),
                reason,
            }),
        }
    }
    for copy in index.inlined_copies(&|name| pattern.matches(name)) {
        if args::request_for(requests, &copy.name).is_some() {
            // Inlined code keeps its arguments wherever the caller's code put them.
            plan.refused.push(Refusal {
                name: format!(
                    "{} (inlined in {} at {}:{})",
                    copy.name, copy.caller, copy.call_file, copy.call_line
                ),
                reason: "--by reads arguments at a function's own entry; an inlined copy has none"
                    .into(),
            });
            continue;
        }
        match plan_inlined(index, &copy) {
            Ok(p) => plan.inlined.push(p),
            Err(reason) => plan.refused.push(Refusal {
                name: format!(
                    "{} (inlined in {} at {}:{})",
                    copy.name, copy.caller, copy.call_file, copy.call_line
                ),
                reason,
            }),
        }
    }
    plan
}

fn plan_inlined(index: &BinaryIndex, copy: &InlinedCopy) -> Result<InlinePlan, String> {
    let sites = index
        .inline_sites(copy)
        .map_err(|e| format!("cannot decode its caller: {e}"))?;
    if sites.entries.is_empty() || sites.exits.is_empty() {
        return Err("no entry or no exit found in its caller's code".into());
    }
    let offsets = |addrs: &[u64]| -> Result<Vec<u64>, String> {
        addrs
            .iter()
            .map(|&a| {
                index.vaddr_to_file_offset(a).ok_or_else(|| {
                    format!("address {a:#x} is not in an executable segment of the file")
                })
            })
            .collect()
    };
    Ok(InlinePlan {
        name: copy.name.clone(),
        entry_offsets: offsets(&sites.entries)?,
        exit_offsets: offsets(&sites.exits)?,
        call: InlineCall {
            caller: copy.caller.clone(),
            file: copy.call_file.clone(),
            line: copy.call_line,
            offset: copy.call_pc.and_then(|pc| index.vaddr_to_file_offset(pc)),
        },
    })
}

/// `reads_args`: the entry site must see the arguments as the caller passed them: not after
/// instructions of the function (an [`EntryKind::EmulatedPrefix`] site).
fn plan_function(
    index: &BinaryIndex,
    function: &Function,
    reads_args: bool,
) -> Result<FunctionPlan, String> {
    if UNPAIRABLE_RUNTIME.contains(&function.name.as_str())
        || function.name.starts_with("runtime.sigtramp")
    {
        return Err(
            "switches stacks or runs without a goroutine; entries and returns cannot be paired"
                .into(),
        );
    }
    if writes_goroutine_register(index, function) {
        return Err(format!(
            "it writes {}, the register that holds the goroutine (an assembly function); \
                    entries and returns cannot be paired",
            if index.arch == crate::inspect::Arch::Aarch64 {
                "x28"
            } else {
                "r14"
            }
        ));
    }
    let sites = index
        .probe_sites(function)
        .map_err(|e| format!("cannot decode its machine code: {e}"))?;
    if sites.returns.is_empty() {
        return Err(if sites.tail_jumps > 0 {
            "it has no RET instruction (it leaves by a tail jump), so its returns cannot be probed"
                .into()
        } else {
            "it has no RET instruction (it never returns normally)".into()
        });
    }
    let offset = |vaddr: u64| {
        index.vaddr_to_file_offset(vaddr).ok_or_else(|| {
            format!("address {vaddr:#x} is not in an executable segment of the file")
        })
    };
    // `GOPROBE_CHEAP_SITES=0` (for `cargo xtask bench`'s before/after): the function's start
    // and its RETs, as before the emulated sites of EntryKind::EmulatedPrefix and
    // ProbeSites::return_sites.
    let cheap = std::env::var("GOPROBE_CHEAP_SITES").as_deref() != Ok("0");
    let entry = if (cheap && !reads_args) || sites.entry_kind != EntryKind::EmulatedPrefix {
        sites.entry
    } else {
        function.addr
    };
    let returns = if cheap {
        &sites.return_sites
    } else {
        &sites.returns
    };
    // arm64 simulates branches and `ret` in its uprobe code; x86-64 emulates the stack-check
    // branch and the early entries, and the NOP before a RET, but single-steps the RET itself.
    let arm64 = index.arch == crate::inspect::Arch::Aarch64;
    let entry_emulated =
        arm64 || entry != function.addr || sites.entry_kind != EntryKind::FunctionStart;
    let returns_emulated = arm64
        || returns
            .iter()
            .zip(&sites.returns)
            .all(|(site, ret)| site != ret);
    Ok(FunctionPlan {
        name: function.name.clone(),
        call_cost_ns: site_cost_ns(entry_emulated) + site_cost_ns(returns_emulated),
        entry_offset: offset(entry)?,
        check_eflags: sites.entry_kind == EntryKind::StackCheckBranch,
        return_offsets: returns
            .iter()
            .map(|&r| offset(r))
            .collect::<Result<_, _>>()?,
        args: None,
    })
}

/// Go code keeps the current goroutine in r14 (ABIInternal, Go >= 1.17); only the runtime's
/// stack switchers and some hand-written assembly (crypto, math/big) overwrite it with anything
/// but the goroutine itself. Where a
/// function does, r14 at its RET is not the goroutine its entry saw. On arm64 the register is x28.
fn writes_goroutine_register(index: &BinaryIndex, function: &Function) -> bool {
    use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, OpAccess, Register};
    let Some(code) = index.function_code(function) else {
        return false;
    };
    if index.arch == crate::inspect::Arch::Aarch64 {
        return crate::inspect::disasm::aarch64_writes_g(code);
    }
    let decoder = Decoder::with_ip(64, code, function.addr, DecoderOptions::NONE);
    let instructions: Vec<_> = decoder.into_iter().filter(|i| !i.is_invalid()).collect();
    let mut info = InstructionInfoFactory::new();
    let tls_load = |i: &iced_x86::Instruction| i.memory_segment() == Register::FS;
    for (n, instruction) in instructions.iter().enumerate() {
        // After calls into ABI0 code the compiler reloads g from thread-local storage: the
        // same goroutine again, not a clobber. `mov r14, fs:[-8]` in executables; in PIE the TLS
        // offset is loaded first, `mov r14, [rip+off]; mov r14, fs:[r14]`.
        if tls_load(instruction) || instructions.get(n + 1).is_some_and(tls_load) {
            continue;
        }
        let used = info.info(instruction);
        if used.used_registers().iter().any(|r| {
            r.register().full_register() == Register::R14
                && matches!(
                    r.access(),
                    OpAccess::Write
                        | OpAccess::ReadWrite
                        | OpAccess::CondWrite
                        | OpAccess::ReadCondWrite
                )
        }) {
            return true;
        }
    }
    false
}

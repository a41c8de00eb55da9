//! From a pattern and an inspected binary to probe sites: which functions match, where each one's
//! entry and return probes go (as file offsets, which is what uprobes take), and which matched
//! functions cannot be traced, with the reason.
pub mod split;

use std::path::PathBuf;

use regex::Regex;

use crate::inspect::{BinaryIndex, EntryKind, Function, inline::InlinedCopy};

#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("pattern {0:?} has no function name: use go:NAME or PATH:NAME, e.g. 'go:main.handle'")]
    NoName(String),
    #[error(
        "pattern {0:?} must start with go: or PATH: (e.g. 'go:fmt.Println' or '/usr/bin/app:main.run')"
    )]
    NoPrefix(String),
    #[error("invalid regular expression {pattern:?}: {source}")]
    Regex {
        pattern: String,
        source: regex::Error,
    },
}

/// A parsed `go:NAME` / `PATH:NAME` pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The NAME part.
    pub name: String,
    /// `Some` for `PATH:NAME`.
    pub binary: Option<PathBuf>,
    matcher: Regex,
}

impl Pattern {
    pub fn parse(raw: &str, regex: bool) -> Result<Self, PatternError> {
        let (prefix, name) = raw
            .split_once(':')
            .ok_or_else(|| PatternError::NoPrefix(raw.into()))?;
        if name.is_empty() {
            return Err(PatternError::NoName(raw.into()));
        }
        let binary = match prefix {
            "go" => None,
            "" => return Err(PatternError::NoPrefix(raw.into())),
            path => Some(PathBuf::from(path)),
        };
        Self::for_name(name, regex, binary)
    }

    /// A pattern over names only (for `goprobe symbols`).
    pub fn name_only(name: &str, regex: bool) -> Result<Self, PatternError> {
        Self::for_name(name, regex, None)
    }

    fn for_name(name: &str, regex: bool, binary: Option<PathBuf>) -> Result<Self, PatternError> {
        let source = if regex {
            name.to_string()
        } else {
            glob_to_regex(name)
        };
        let matcher = Regex::new(&source).map_err(|source| PatternError::Regex {
            pattern: name.into(),
            source,
        })?;
        Ok(Self {
            name: name.into(),
            binary,
            matcher,
        })
    }

    /// One pattern that matches what any of `patterns` matches (the agent plans a binary once
    /// for all its probes). Its `name` lists theirs, for messages.
    pub fn any_of(patterns: &[Pattern]) -> Self {
        let source = patterns
            .iter()
            .map(|p| format!("(?:{})", p.matcher.as_str()))
            .collect::<Vec<_>>()
            .join("|");
        let name = patterns
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            name,
            binary: None,
            // Each part compiled on its own, so their alternation compiles too; an empty list
            // matches nothing.
            matcher: Regex::new(if patterns.is_empty() {
                "[^\\s\\S]"
            } else {
                &source
            })
            .expect("an alternation of valid regexes is valid"),
        }
    }

    pub fn matches(&self, function: &str) -> bool {
        self.matcher.is_match(function)
    }

    /// Names that the user may have meant, best first: names containing the pattern's literal
    /// text, then the closest by edit distance.
    pub fn closest<'a>(&self, names: impl Iterator<Item = &'a str>, limit: usize) -> Vec<String> {
        let literal: String = self
            .name
            .chars()
            .filter(|c| !matches!(c, '*' | '?' | '^' | '$'))
            .collect();
        let literal_lower = literal.to_lowercase();
        let mut scored: Vec<(f64, &str)> = names
            .map(|name| {
                let lower = name.to_lowercase();
                let contains = !literal_lower.is_empty() && lower.contains(&literal_lower);
                let tail = lower.rsplit(['.', '/']).next().unwrap_or(&lower);
                let want_tail = literal_lower
                    .rsplit(['.', '/'])
                    .next()
                    .unwrap_or(&literal_lower);
                let similarity = strsim::jaro_winkler(&literal_lower, &lower)
                    .max(strsim::jaro_winkler(want_tail, tail) * 0.95);
                (similarity + if contains { 1.0 } else { 0.0 }, name)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.dedup_by(|a, b| a.1 == b.1);
        scored
            .into_iter()
            .take(limit)
            .map(|(_, name)| name.to_string())
            .collect()
    }
}

/// Whole-name glob: `*` any run of characters (including `/` and `.`), `?` one character.
/// A `*` right after `(` is Go's pointer-receiver syntax (`net/http.(*conn).serve`), so it is
/// taken literally.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    let mut previous = None;
    for c in glob.chars() {
        match c {
            '*' if previous == Some('(') => out.push_str(r"\*"),
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        previous = Some(c);
    }
    out.push('$');
    out
}

/// Where to probe one function, as file offsets in its binary.
#[derive(Debug, Clone)]
pub struct FunctionPlan {
    pub name: String,
    pub entry_offset: u64,
    /// The entry is the stack-check `jbe`: the kernel side must filter the morestack path.
    pub check_eflags: bool,
    pub return_offsets: Vec<u64>,
}

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

pub fn plan_binary(index: &BinaryIndex, pattern: &Pattern) -> BinaryPlan {
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
        match plan_function(index, function) {
            Ok(p) => plan.functions.push(p),
            Err(reason) => plan.refused.push(Refusal {
                name: function.name.clone(),
                reason,
            }),
        }
    }
    for copy in index.inlined_copies(&|name| pattern.matches(name)) {
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

fn plan_function(index: &BinaryIndex, function: &Function) -> Result<FunctionPlan, String> {
    if UNPAIRABLE_RUNTIME.contains(&function.name.as_str())
        || function.name.starts_with("runtime.sigtramp")
    {
        return Err(
            "switches stacks or runs without a goroutine; entries and returns cannot be paired"
                .into(),
        );
    }
    if writes_goroutine_register(index, function) {
        return Err(
            "it writes r14, the register that holds the goroutine (an assembly function); \
                    entries and returns cannot be paired"
                .into(),
        );
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
    let entry = if cheap || sites.entry_kind != EntryKind::EmulatedPrefix {
        sites.entry
    } else {
        function.addr
    };
    let returns = if cheap {
        &sites.return_sites
    } else {
        &sites.returns
    };
    Ok(FunctionPlan {
        name: function.name.clone(),
        entry_offset: offset(entry)?,
        check_eflags: sites.entry_kind == EntryKind::StackCheckBranch,
        return_offsets: returns
            .iter()
            .map(|&r| offset(r))
            .collect::<Result<_, _>>()?,
    })
}

/// Go code keeps the current goroutine in r14 (ABIInternal, Go >= 1.17); only the runtime's
/// stack switchers and some hand-written assembly (crypto, math/big) overwrite it with anything
/// but the goroutine itself. Where a
/// function does, r14 at its RET is not the goroutine its entry saw.
fn writes_goroutine_register(index: &BinaryIndex, function: &Function) -> bool {
    use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, OpAccess, Register};
    let Some(code) = index.function_code(function) else {
        return false;
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_and_path_patterns() {
        let p = Pattern::parse("go:fmt.Println", false).unwrap();
        assert!(p.binary.is_none());
        assert!(p.matches("fmt.Println"));
        assert!(!p.matches("fmt.Printlnx"));
        let p = Pattern::parse("/usr/bin/caddy:net/http.*", false).unwrap();
        assert_eq!(
            p.binary.as_deref(),
            Some(std::path::Path::new("/usr/bin/caddy"))
        );
        assert!(p.matches("net/http.(*conn).serve"));
        assert!(!p.matches("xnet/http.foo"));
        assert!(matches!(
            Pattern::parse("fmt.Println", false),
            Err(PatternError::NoPrefix(_))
        ));
        assert!(matches!(
            Pattern::parse("go:", false),
            Err(PatternError::NoName(_))
        ));
    }

    #[test]
    fn globs_escape_go_punctuation() {
        let p = Pattern::parse("go:main.(*T).M", false).unwrap();
        assert!(p.matches("main.(*T).M"));
        assert!(!p.matches("main.(xT).M"));
        let p = Pattern::parse("go:main.(*T).*", false).unwrap();
        assert!(p.matches("main.(*T).Method"));
        assert!(!p.matches("main.T.Method"));
        let p = Pattern::parse("go:main.F[...]", false).unwrap();
        assert!(p.matches("main.F[...]"));
        let p = Pattern::parse("go:main.?un", false).unwrap();
        assert!(p.matches("main.run"));
    }

    #[test]
    fn any_of_matches_each_part() {
        let a = Pattern::parse("go:main.a*", false).unwrap();
        let b = Pattern::parse(r"go:\.handle$", true).unwrap();
        let both = Pattern::any_of(&[a, b]);
        assert!(both.matches("main.abc"));
        assert!(both.matches("net/http.handle"));
        assert!(!both.matches("xmain.a"));
        assert!(!Pattern::any_of(&[]).matches("main.main"));
    }

    #[test]
    fn regex_is_searched() {
        let p = Pattern::parse(r"go:handle\w+", true).unwrap();
        assert!(p.matches("main.handleRequest"));
        assert!(matches!(
            Pattern::parse("go:(", true),
            Err(PatternError::Regex { .. })
        ));
    }

    #[test]
    fn suggests_close_names() {
        let p = Pattern::parse("go:main.goprobeE2ECuont", false).unwrap();
        let names = [
            "main.goprobeE2ECount",
            "main.main",
            "runtime.main",
            "fmt.Println",
        ];
        assert_eq!(
            p.closest(names.into_iter(), 1),
            vec!["main.goprobeE2ECount".to_string()]
        );
        let p = Pattern::parse("go:Println", false).unwrap();
        assert_eq!(
            p.closest(names.into_iter(), 1),
            vec!["fmt.Println".to_string()]
        );
    }
}

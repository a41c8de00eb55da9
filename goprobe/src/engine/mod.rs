//! The pipeline that every front end drives: targets → inspect → plan → kernel → aggregation.
//! `funclatency` is a short-lived tracer with one pattern; the daemon (`goprobe agent`) runs the
//! same tracer with the patterns of all its probes, and attaches each process to the functions
//! of the probes that select it ([`Tracer::attach_selected`]).
//!
//! Binaries are inspected once per build ID: copies of one build (the same program in many
//! containers) share one inspection and one plan, and only the attachments differ.

pub mod budget;
pub mod hostwide;
pub mod offcpu;
pub mod profiler;
pub mod run;
pub mod session;
pub mod stack_view;
pub mod stop;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
};

use aya::maps::{MapData, RingBuf};
use goprobe_common::{InlineSite, Misses, cookie};

use crate::{
    inspect::{BinaryIndex, InspectError},
    kernel::{AttachMode, Attachment, Counters, Kernel, KernelError, Probes, Site},
    pipeline::{Aggregator, FunctionInfo, FunctionTable, Latencies},
    plan::{BinaryPlan, InlineCall, Pattern, Refusal, plan_binary},
    targets::BinaryKey,
};

/// Values per (function id, pid).
pub type ByCall<T> = BTreeMap<(u32, u32), T>;

/// How the reason of a binary skipped because its matches cannot be traced safely begins.
const REFUSED: &str = "matching functions cannot be traced";

/// A binary that was inspected for the pattern, and what came of it.
#[derive(Debug, Clone)]
pub enum BinaryState {
    /// Matching functions and the probe sites for them (cookies carry the function ids).
    Planned {
        plan: BinaryPlan,
        entries: Vec<Site>,
        returns: Vec<Site>,
    },
    /// Not traced: not Go, unreadable, or nothing matches (with the names of the binary kept
    /// for suggestions).
    Skipped { reason: String, names: Vec<String> },
}

pub struct Tracer {
    pub pattern: Pattern,
    /// `--by` or packs: what to label the calls of the functions each pattern matches by,
    /// read from their arguments (the first pattern that matches a function applies).
    pub arg_requests: crate::plan::args::ArgRequests,
    kernel: Kernel,
    ring: RingBuf<MapData>,
    pub functions: FunctionTable,
    pub aggregator: Aggregator,
    binaries: HashMap<BinaryKey, BinaryState>,
    /// The binary (file) first planned for each build ID: other files with that build ID reuse
    /// its plan instead of being inspected again.
    by_build_id: HashMap<String, BinaryKey>,
    attachments: HashMap<AttachmentId, Attachment>,
    next_attachment: u64,
    /// The attachments made for one process (`-p`), by PID: an exec replaces them.
    by_pid: HashMap<u32, AttachmentId>,
    /// Attach each function's own sites apart ([`Tracer::shed`] can then detach one function
    /// while the others go on, exactly): the agent, under its overhead budget.
    pub sheddable: bool,
    /// The links of each function attached apart, by attachment.
    function_links: HashMap<AttachmentId, BTreeMap<u32, Attachment>>,
    /// Keep the function names of Go binaries where nothing matched, for "closest names"
    /// hints (`funclatency`); a long-running agent does not need them.
    pub keep_names: bool,
    /// Refuse an attach that places more than this ([`TraceError::TooMany`]).
    pub attach_limit: Option<AttachLimit>,
    /// Binaries inspected (ELF and pclntab read) so far: once per distinct build ID.
    pub inspections: u64,
    /// Inspections that failed on a Go binary or an unreadable file (not "not a Go binary").
    pub inspection_failures: u64,
    /// The function ids each inline site acts on, to attach only the selected ones.
    inline_site_functions: HashMap<u32, Vec<u32>>,
    /// Function id → file offset where inlined copies of it end → the calls those copies stand
    /// for (several copies may end at one address).
    inline_calls: HashMap<u32, HashMap<u64, Vec<InlineCall>>>,
    /// Distinct function names attached so far.
    pub traced_names: HashSet<String>,
    misses_seen: HashMap<(u32, u32), Misses>,
    counters_seen: Counters,
    next_inline_site: u32,
}

/// Where probes were attached.
#[derive(Debug)]
pub struct Attached {
    /// Distinct functions traced (out-of-line, inlined, or both).
    pub functions: usize,
    pub inlined_copies: usize,
    pub sites: usize,
    /// Matching functions that were not traced, with the reason.
    pub refused: Vec<crate::plan::Refusal>,
    /// Ids of the functions attached (their events carry these).
    pub ids: BTreeSet<u32>,
}

/// Names one [`Tracer::attach`] so it can be detached alone (the agent, when a process exits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttachmentId(u64);

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{0}")]
    NoMatch(String),
    #[error(
        "{pattern:?} matches {functions} functions ({sites} probe sites) in {path}: more than {} functions or {} sites slows the program down (each traced call costs it about 1-10 µs); narrow the pattern, or add --force",
        AttachLimit::INTERACTIVE.functions,
        AttachLimit::INTERACTIVE.sites
    )]
    TooMany {
        pattern: String,
        path: String,
        functions: usize,
        sites: usize,
    },
}

/// The most functions and probe sites one attach may place before goprobe asks for `--force`:
/// an on-call engineer's broad pattern (`go:net/http.*`, a `-r` that matches everything)
/// must not take a service down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachLimit {
    pub functions: usize,
    pub sites: usize,
}

impl AttachLimit {
    /// The limit of `funclatency` and `stackcount` without `--force`.
    pub const INTERACTIVE: AttachLimit = AttachLimit {
        functions: 100,
        sites: 1000,
    };

    /// [`AttachLimit::INTERACTIVE`], or none with `--force`.
    pub fn unless_forced(force: bool) -> Option<AttachLimit> {
        (!force).then_some(Self::INTERACTIVE)
    }
}

impl Tracer {
    #[allow(
        dead_code,
        reason = "plain latency tracing, for callers without stacks"
    )]
    pub fn new(pattern: Pattern, mode: Option<AttachMode>) -> Result<Self, KernelError> {
        Self::with_probes(
            pattern,
            mode,
            Probes::Latency {
                stacks_min_ns: None,
            },
        )
    }

    /// A tracer whose probes do `probes` (latency, with or without stacks, or stack counts).
    pub fn with_probes(
        pattern: Pattern,
        mode: Option<AttachMode>,
        probes: Probes,
    ) -> Result<Self, KernelError> {
        let mut kernel = Kernel::load_with(mode, probes)?;
        let ring = kernel.take_events()?;
        Ok(Self {
            pattern,
            arg_requests: Vec::new(),
            kernel,
            ring,
            functions: FunctionTable::default(),
            aggregator: Aggregator::default(),
            binaries: HashMap::new(),
            by_build_id: HashMap::new(),
            attachments: HashMap::new(),
            next_attachment: 0,
            by_pid: HashMap::new(),
            attach_limit: None,
            sheddable: false,
            function_links: HashMap::new(),
            keep_names: true,
            inspections: 0,
            inspection_failures: 0,
            inline_site_functions: HashMap::new(),
            inline_calls: HashMap::new(),
            traced_names: HashSet::new(),
            misses_seen: HashMap::new(),
            counters_seen: Counters::default(),
            next_inline_site: 0,
        })
    }

    /// Trace another pattern from now on (the agent's config was reloaded). Plans are made
    /// again when binaries are next planned; function ids stay unique, so events still in the
    /// ring buffer from earlier attachments keep their names. Detach first.
    pub fn set_pattern(&mut self, pattern: Pattern) {
        self.pattern = pattern;
        self.binaries.clear();
        self.by_build_id.clear();
        self.traced_names.clear();
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The entry site of every out-of-line function planned so far: (binary, function id, file
    /// offset). Stack users place a binary in a process from where its sites were hit.
    pub fn entry_sites(&self) -> Vec<(BinaryKey, u32, u64)> {
        let mut out = Vec::new();
        for (key, state) in &self.binaries {
            if let BinaryState::Planned { entries, .. } = state {
                out.extend(
                    entries
                        .iter()
                        .filter(|s| s.cookie & (cookie::INLINE_SITE | cookie::BOOKKEEPING) == 0)
                        .map(|s| (*key, (s.cookie & cookie::FUNC_MASK) as u32, s.offset)),
                );
            }
        }
        out
    }

    /// Where inlined copies of each function end (file offsets), and the calls they stand for.
    pub fn inline_calls(&self) -> &HashMap<u32, HashMap<u64, Vec<InlineCall>>> {
        &self.inline_calls
    }

    /// The RET sites of every out-of-line function planned so far: (binary, function id, file
    /// offset).
    pub fn return_sites(&self) -> Vec<(BinaryKey, u32, u64)> {
        let mut out = Vec::new();
        for (key, state) in &self.binaries {
            if let BinaryState::Planned { returns, .. } = state {
                out.extend(
                    returns
                        .iter()
                        .map(|s| (*key, (s.cookie & cookie::FUNC_MASK) as u32, s.offset)),
                );
            }
        }
        out
    }

    pub fn kernel_mut(&mut self) -> &mut Kernel {
        &mut self.kernel
    }

    pub fn is_known(&self, key: &BinaryKey) -> bool {
        self.binaries.contains_key(key)
    }

    pub fn binary_state(&self, key: &BinaryKey) -> Option<&BinaryState> {
        self.binaries.get(key)
    }

    /// Inspect a binary once and plan its probe sites; later calls for the same file reuse it.
    pub fn plan(&mut self, key: BinaryKey, path: &Path) -> &BinaryState {
        if self.binaries.contains_key(&key) {
            return &self.binaries[&key];
        }
        // Another file of the same build (a copy, or the same image in another container)
        // was planned already: reuse it. The plan is in file offsets, which a build ID fixes.
        let build_id = crate::inspect::read_build_id(path);
        if let Some(known) = build_id.as_ref().and_then(|id| self.by_build_id.get(id))
            && let Some(state) = self.binaries.get(known)
        {
            let state = state.clone();
            self.binaries.insert(key, state);
            return &self.binaries[&key];
        }
        {
            self.inspections += 1;
            let state = match inspect_and_plan(
                path,
                &self.pattern,
                self.kernel.split(),
                &self.arg_requests,
            ) {
                Ok(plan) if plan.functions.is_empty() && plan.inlined.is_empty() => {
                    let reason = if plan.refused.is_empty() {
                        format!("no function matches {}", self.pattern.quoted())
                    } else {
                        let why: Vec<String> = plan
                            .refused
                            .iter()
                            .map(|r| format!("{}: {}", r.name, r.reason))
                            .collect();
                        format!("{REFUSED} ({})", why.join("; "))
                    };
                    BinaryState::Skipped {
                        reason,
                        names: Vec::new(),
                    }
                }
                Ok(plan) => self.probes_for(plan, path),
                Err(Skip {
                    reason,
                    names,
                    failed,
                }) => {
                    self.inspection_failures += u64::from(failed);
                    BinaryState::Skipped {
                        reason,
                        names: if self.keep_names { names } else { Vec::new() },
                    }
                }
            };
            if let Some(id) = build_id {
                self.by_build_id.insert(id, key);
            }
            self.binaries.insert(key, state);
        }
        &self.binaries[&key]
    }

    /// Give the planned functions ids, and turn the plan into probe sites. Inlined copies of one
    /// function share its id; their boundaries go into the kernel's inline site table.
    fn probes_for(&mut self, mut plan: BinaryPlan, path: &Path) -> BinaryState {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut id_of = |functions: &mut FunctionTable, name: &str| -> u32 {
            *ids.entry(name.to_string()).or_insert_with(|| {
                functions.add(FunctionInfo {
                    name: name.to_string(),
                    binary: path.to_path_buf(),
                    out_of_line: false,
                    inlined_copies: 0,
                    call_cost_ns: 0,
                    ..FunctionInfo::default()
                })
            })
        };
        let mut entries = Vec::new();
        let mut returns = Vec::new();
        let mut unreadable = Vec::new();
        for function in &plan.functions {
            let id = id_of(&mut self.functions, &function.name);
            let info = self.functions.get_mut(id);
            info.out_of_line = true;
            info.call_cost_ns = info.call_cost_ns.max(function.call_cost_ns);
            let mut flags = if function.check_eflags {
                cookie::CHECK_EFLAGS
            } else {
                0
            };
            // Results, or what a kept pointer leads to: read at the RETs too.
            let mut return_flags = 0;
            if let (Some(spec), Some(request)) = (
                &function.args,
                crate::plan::args::request_for(&self.arg_requests, &function.name),
            ) {
                if let Err(e) = self.kernel.set_arg_spec(id, spec) {
                    unreadable.push(Refusal {
                        name: function.name.clone(),
                        reason: e.to_string(),
                    });
                    continue;
                }
                flags |= cookie::ARGS;
                if spec.phases & goprobe_common::args::PHASE_RETURN != 0 {
                    return_flags |= cookie::ARGS;
                }
                let info = self.functions.get_mut(id);
                info.normalize_sql = request.normalize_sql;
                info.value_map = request.value_map;
                // The labels' values, then `--where`'s if it is read apart.
                info.by = request
                    .labels
                    .iter()
                    .cloned()
                    .chain(std::iter::once("where".to_string()))
                    .zip(&spec.reads)
                    .filter(|(_, read)| read.kind != goprobe_common::args::KIND_NONE)
                    .map(|(label, read)| (label, read.kind))
                    .collect();
                info.labelled = request.labels.len();
                info.filter = request
                    .filter
                    .clone()
                    .zip(request.filter_index())
                    .map(|(filter, index)| (index, filter));
            }
            entries.push(Site {
                offset: function.entry_offset,
                cookie: cookie::encode(id, flags),
            });
            returns.extend(function.return_offsets.iter().map(|&offset| Site {
                offset,
                cookie: cookie::encode(id, return_flags),
            }));
        }

        plan.refused.extend(unreadable);
        // Each address where inlined copies begin or end is one site, doing all that happens there.
        let mut boundaries: BTreeMap<u64, InlineSite> = BTreeMap::new();
        let mut dropped = Vec::new();
        for copy in &plan.inlined {
            let id = id_of(&mut self.functions, &copy.name);
            let info = self.functions.get_mut(id);
            info.inlined_copies += 1;
            info.call_cost_ns = info.call_cost_ns.max(crate::plan::INLINE_COPY_COST_NS);
            let mut fits = true;
            for &offset in &copy.exit_offsets {
                fits &= add_action(boundaries.entry(offset).or_default(), id, true);
                let calls = self
                    .inline_calls
                    .entry(id)
                    .or_default()
                    .entry(offset)
                    .or_default();
                if !calls.contains(&copy.call) {
                    calls.push(copy.call.clone());
                }
            }
            for &offset in &copy.entry_offsets {
                fits &= add_action(boundaries.entry(offset).or_default(), id, false);
            }
            if !fits {
                dropped.push(copy.name.clone());
            }
        }
        for (offset, site) in boundaries {
            if self.next_inline_site >= goprobe_common::MAX_INLINE_SITES {
                plan.refused.push(Refusal {
                    name: "inlined copies".into(),
                    reason: format!(
                        "more than {} inline boundaries in all",
                        goprobe_common::MAX_INLINE_SITES
                    ),
                });
                break;
            }
            let index = self.next_inline_site;
            if let Err(e) = self.kernel.set_inline_site(index, &site) {
                plan.refused.push(Refusal {
                    name: "inlined copies".into(),
                    reason: e.to_string(),
                });
                break;
            }
            self.next_inline_site += 1;
            let acting = site.entries[..site.n_entries as usize]
                .iter()
                .chain(&site.exits[..site.n_exits as usize])
                .copied()
                .collect();
            self.inline_site_functions.insert(index, acting);
            entries.push(Site {
                offset,
                cookie: cookie::encode(index, cookie::INLINE_SITE),
            });
        }
        for name in dropped {
            plan.refused.push(Refusal {
                name,
                reason: format!(
                    "some of its inlined copies meet more than {} others at one address; those are timed only in part",
                    goprobe_common::MAX_INLINE_ACTIONS
                ),
            });
        }

        // The goroutine-exit and stack-move probes let the kernel keep each goroutine's
        // `g.stack.hi` instead of reading it at every site; both are needed for that (a reused
        // `g` or a moved stack would otherwise keep a stale value). Not when the user traces
        // either function: one offset takes one cookie.
        let free = |offset: u64| !entries.iter().any(|e: &Site| e.offset == offset);
        let exit_site = plan.goroutine_exit.filter(|&(offset, _)| free(offset)).map(
            |(offset, check_eflags)| Site {
                offset,
                cookie: cookie::encode(
                    0,
                    cookie::GOROUTINE_EXIT
                        | if check_eflags {
                            cookie::CHECK_EFLAGS
                        } else {
                            0
                        },
                ),
            },
        );
        let move_site = plan
            .stack_move
            .filter(|&offset| free(offset))
            .map(|offset| Site {
                offset,
                cookie: cookie::encode(0, cookie::STACK_MOVE),
            });
        if let (Some(_), Some(move_site)) = (exit_site, move_site)
            && std::env::var("GOPROBE_STACK_HI_CACHE").as_deref() != Ok("0")
        {
            for site in entries.iter_mut().chain(returns.iter_mut()) {
                site.cookie |= cookie::STACK_HI_CACHED;
            }
            entries.push(move_site);
        }
        entries.extend(exit_site);
        // `--split`: the runtime's status changes, on sites of their own program.
        if let Some(split) = &plan.split {
            for note in &split.notes {
                eprintln!("goprobe: --split: {}: {note}", path.display());
            }
            let sites: Vec<Site> = split
                .sites
                .iter()
                .filter(|&&(offset, _)| !entries.iter().any(|e| e.offset == offset))
                .map(|&(offset, cookie)| Site { offset, cookie })
                .collect();
            entries.extend(sites);
        }
        BinaryState::Planned {
            plan,
            entries,
            returns,
        }
    }

    /// Attach the planned probes of binary `key`, reached through `path`, for `pid` only or (None)
    /// for every process running that file.
    pub fn attach(
        &mut self,
        key: BinaryKey,
        path: &Path,
        pid: Option<u32>,
    ) -> Result<Attached, TraceError> {
        let (attached, id) = self.attach_selected(key, path, pid, &|_| true)?;
        if let Some(pid) = pid {
            self.by_pid.insert(pid, id);
        }
        Ok(attached)
    }

    /// Process `exec.pid` exec'd: drop what its old program left in the kernel (open calls
    /// that will never return, cached stack bounds), so that the new program, whose goroutines
    /// may sit at the same addresses, starts clean.
    pub fn forget_old_program(&mut self, exec: &crate::targets::Exec) {
        self.kernel.forget_before_exec(exec.pid, exec.ktime_ns);
    }

    /// Process `exec.pid` exec'd: it is a new process. What its old program left in the kernel
    /// goes. If it was attached on its own ([`Tracer::attach`] with its PID) and the exec came
    /// from another thread than the main one, its new program is planned and attached in its
    /// place: the kernel ties a per-PID attachment to the main thread's task, which such an exec
    /// ends (an exec by the main thread keeps it, and the attachment goes on firing). Returns that
    /// attach, if there was one to redo (an error when the new program has nothing to trace).
    pub fn exec(
        &mut self,
        exec: &crate::targets::Exec,
    ) -> Option<Result<(BinaryKey, Attached), TraceError>> {
        self.forget_old_program(exec);
        if exec.old_tid == exec.pid {
            return None;
        }
        let old = self.by_pid.remove(&exec.pid)?;
        // The new attachment first, and the old one (which fires no more) detached in the
        // background: detaching waits for the kernel, tens of milliseconds per link.
        let attached = match exec.exe.as_ref() {
            // Gone already: nothing to attach to.
            Err(_) => None,
            Ok(exe) => {
                let path = exe.path();
                match self.plan(exe.binary, &path) {
                    BinaryState::Skipped { reason, .. } => {
                        Some(Err(TraceError::NoMatch(reason.clone())))
                    }
                    BinaryState::Planned { .. } => Some(
                        self.attach(exe.binary, &path, Some(exec.pid))
                            .map(|attached| (exe.binary, attached)),
                    ),
                }
            }
        };
        if let Some(attachment) = self.attachments.remove(&old) {
            self.kernel.detach_in_background(attachment);
        }
        for (_, attachment) in self.function_links.remove(&old).unwrap_or_default() {
            self.kernel.detach_in_background(attachment);
        }
        attached
    }

    /// Like [`Tracer::attach`], for the planned functions whose name `select` accepts only
    /// (the agent: the functions of the probes that select this process). Returns the id to
    /// detach them with. An inline site where a selected and an unselected function's copies
    /// meet times both; [`Attached::ids`] names the selected ones.
    pub fn attach_selected(
        &mut self,
        key: BinaryKey,
        path: &Path,
        pid: Option<u32>,
        select: &dyn Fn(&str) -> bool,
    ) -> Result<(Attached, AttachmentId), TraceError> {
        let Some(BinaryState::Planned {
            plan,
            entries,
            returns,
        }) = self.binaries.get(&key)
        else {
            return Err(TraceError::NoMatch(format!(
                "{} has nothing to trace",
                path.display()
            )));
        };
        let selected = |id: u32| {
            self.functions
                .get(id)
                .is_some_and(|f| select(f.name.as_str()))
        };
        let keep = |site: &&Site| {
            let low = (site.cookie & cookie::FUNC_MASK) as u32;
            if site.cookie & cookie::BOOKKEEPING != 0 {
                true
            } else if site.cookie & cookie::INLINE_SITE != 0 {
                self.inline_site_functions
                    .get(&low)
                    .is_some_and(|ids| ids.iter().any(|&id| selected(id)))
            } else {
                selected(low)
            }
        };
        let entries: Vec<Site> = entries.iter().filter(keep).copied().collect();
        let returns: Vec<Site> = returns.iter().filter(keep).copied().collect();
        let names: BTreeSet<String> = plan
            .functions
            .iter()
            .map(|f| f.name.clone())
            .chain(plan.inlined.iter().map(|c| c.name.clone()))
            .filter(|name| select(name))
            .collect();
        if names.is_empty() {
            return Err(TraceError::NoMatch(format!(
                "{} has no selected function to trace",
                path.display()
            )));
        }
        let mut ids = BTreeSet::new();
        for site in entries.iter().chain(&returns) {
            let low = (site.cookie & cookie::FUNC_MASK) as u32;
            if site.cookie & cookie::BOOKKEEPING != 0 {
                continue;
            } else if site.cookie & cookie::INLINE_SITE != 0 {
                let acting = self.inline_site_functions.get(&low).into_iter().flatten();
                ids.extend(acting.copied().filter(|&id| selected(id)));
            } else {
                ids.insert(low);
            }
        }
        let attached = Attached {
            functions: names.len(),
            inlined_copies: plan.inlined.iter().filter(|c| select(&c.name)).count(),
            sites: entries.len() + returns.len(),
            refused: plan.refused.clone(),
            ids,
        };
        if let Some(limit) = self.attach_limit
            && (attached.functions > limit.functions || attached.sites > limit.sites)
        {
            return Err(TraceError::TooMany {
                pattern: self.pattern.name.clone(),
                path: path.display().to_string(),
                functions: attached.functions,
                sites: attached.sites,
            });
        }
        let (attachment, by_function) = if self.sheddable {
            self.attach_by_function(path, pid, &entries, &returns)?
        } else {
            (
                self.kernel.attach(path, pid, &entries, &returns)?,
                BTreeMap::new(),
            )
        };
        let id = AttachmentId(self.next_attachment);
        self.next_attachment += 1;
        self.attachments.insert(id, attachment);
        if !by_function.is_empty() {
            self.function_links.insert(id, by_function);
        }
        self.traced_names.extend(names);
        Ok((attached, id))
    }

    /// Start the kernel's exec events, and the thread that opens each new process's executable
    /// as it starts (host-wide discovery, the agent).
    pub fn watch_execs(&mut self) -> Result<crate::targets::ExecWatch, String> {
        let ring = self.kernel.watch_execs().map_err(|e| e.to_string())?;
        crate::targets::ExecWatch::start(ring).map_err(|e| e.to_string())
    }

    /// Detach one attachment (its process exited, or the agent's config changed).
    pub fn detach(&mut self, id: AttachmentId) {
        if let Some(attachment) = self.attachments.remove(&id) {
            self.kernel.detach(attachment);
        }
        for (_, attachment) in self.function_links.remove(&id).unwrap_or_default() {
            self.kernel.detach(attachment);
        }
    }

    /// Attach each plain function's entry and return sites as links of their own, and the rest
    /// (inline boundaries, which several functions may share, and the runtime's bookkeeping
    /// sites) together.
    fn attach_by_function(
        &mut self,
        path: &Path,
        pid: Option<u32>,
        entries: &[Site],
        returns: &[Site],
    ) -> Result<(Attachment, BTreeMap<u32, Attachment>), TraceError> {
        let plain = |site: &Site| site.cookie & (cookie::INLINE_SITE | cookie::BOOKKEEPING) == 0;
        let function = |site: &Site| (site.cookie & cookie::FUNC_MASK) as u32;
        let mut groups: BTreeMap<u32, (Vec<Site>, Vec<Site>)> = BTreeMap::new();
        for site in entries.iter().filter(|s| plain(s)) {
            groups.entry(function(site)).or_default().0.push(*site);
        }
        for site in returns.iter().filter(|s| plain(s)) {
            groups.entry(function(site)).or_default().1.push(*site);
        }
        let shared_entries: Vec<Site> = entries.iter().filter(|s| !plain(s)).copied().collect();
        let shared_returns: Vec<Site> = returns.iter().filter(|s| !plain(s)).copied().collect();
        let mut by_function = BTreeMap::new();
        for (func, (entries, returns)) in groups {
            match self.kernel.attach(path, pid, &entries, &returns) {
                Ok(attachment) => {
                    by_function.insert(func, attachment);
                }
                Err(e) => {
                    for (_, attachment) in by_function {
                        self.kernel.detach(attachment);
                    }
                    return Err(e.into());
                }
            }
        }
        match self
            .kernel
            .attach(path, pid, &shared_entries, &shared_returns)
        {
            Ok(shared) => Ok((shared, by_function)),
            Err(e) => {
                for (_, attachment) in by_function {
                    self.kernel.detach(attachment);
                }
                Err(e.into())
            }
        }
    }

    /// Detach function `func` from attachment `id` (made [`Tracer::sheddable`]), in the
    /// background, leaving its other functions attached; false if it has no links of its own
    /// there (it is traced only as inlined copies, or not at all).
    pub fn shed(&mut self, id: AttachmentId, func: u32) -> bool {
        let Some(attachment) = self
            .function_links
            .get_mut(&id)
            .and_then(|links| links.remove(&func))
        else {
            return false;
        };
        self.kernel.detach_in_background(attachment);
        true
    }

    pub fn detach_all(&mut self) {
        for (_, attachment) in std::mem::take(&mut self.attachments) {
            self.kernel.detach(attachment);
        }
        for (_, links) in std::mem::take(&mut self.function_links) {
            for (_, attachment) in links {
                self.kernel.detach(attachment);
            }
        }
    }

    pub fn drain(&mut self) -> usize {
        self.aggregator.drain(&mut self.ring, &mut self.functions)
    }

    /// This interval's histograms, and the calls seen but not timed since the last call, by
    /// (function id, pid).
    pub fn take_interval(&mut self) -> (ByCall<Latencies>, ByCall<Misses>) {
        let mut missed = BTreeMap::new();
        for (key, total) in self.kernel.misses() {
            let seen = self.misses_seen.entry(key).or_default();
            let delta = Misses {
                lost: total.lost.saturating_sub(seen.lost),
                untimed: total.untimed.saturating_sub(seen.untimed),
                unpaired: total.unpaired.saturating_sub(seen.unpaired),
            };
            *seen = total;
            if !delta.is_empty() {
                missed.insert(key, delta);
            }
        }
        (self.aggregator.take(), missed)
    }

    pub fn counters(&self) -> Counters {
        self.kernel.counters()
    }

    /// How much each counter grew since the last call.
    pub fn counter_deltas(&mut self) -> Counters {
        let now = self.kernel.counters();
        let mut delta = now;
        for (d, seen) in delta.iter_mut().zip(self.counters_seen) {
            *d = d.saturating_sub(seen);
        }
        self.counters_seen = now;
        delta
    }

    pub fn sweep(&mut self, keep: impl Fn(u32) -> bool) -> usize {
        self.aggregator.by_arg.forget_exited(&keep);
        self.kernel.sweep_goroutines(keep)
    }

    /// Why the matching functions cannot be traced, if a binary inspected so far was skipped for
    /// that (host-wide, where no other binary matched: the reason, rather than waiting).
    pub fn refusal(&self) -> Option<&str> {
        self.binaries.values().find_map(|state| match state {
            BinaryState::Skipped { reason, .. } if reason.starts_with(REFUSED) => {
                Some(reason.as_str())
            }
            _ => None,
        })
    }

    /// All function names of skipped Go binaries and planned ones, for "did you mean".
    pub fn suggestions(&self, limit: usize) -> Vec<String> {
        let names = self.binaries.values().flat_map(|state| match state {
            BinaryState::Skipped { names, .. } => {
                names.iter().map(String::as_str).collect::<Vec<_>>()
            }
            BinaryState::Planned { .. } => Vec::new(),
        });
        self.pattern.closest(names, limit)
    }
}

/// Record that inlined copies of function `id` end (`exit`) or begin at this site; false if the
/// site has no room left.
fn add_action(site: &mut InlineSite, id: u32, exit: bool) -> bool {
    let (list, n) = if exit {
        (&mut site.exits, &mut site.n_exits)
    } else {
        (&mut site.entries, &mut site.n_entries)
    };
    if list[..*n as usize].contains(&id) {
        return true;
    }
    if *n as usize >= list.len() {
        return false;
    }
    list[*n as usize] = id;
    *n += 1;
    true
}

/// Why a binary is not planned.
struct Skip {
    reason: String,
    /// For Go binaries without a match: their function names.
    names: Vec<String>,
    /// Inspection failed on something that should have been readable (not merely "not Go").
    failed: bool,
}

/// Inspect and plan.
fn inspect_and_plan(
    path: &Path,
    pattern: &Pattern,
    split: bool,
    requests: &crate::plan::args::ArgRequests,
) -> Result<BinaryPlan, Skip> {
    let index = BinaryIndex::open(path).map_err(|e| Skip {
        failed: !matches!(e, InspectError::NotGo { .. } | InspectError::NotElf { .. }),
        reason: e.to_string(),
        names: Vec::new(),
    })?;
    let mut plan = plan_binary(&index, pattern, requests);
    if split {
        plan.split = Some(crate::plan::split::plan_split(&index));
    }
    if plan.functions.is_empty() && plan.inlined.is_empty() && plan.refused.is_empty() {
        let names = index.functions.iter().map(|f| f.name.clone()).collect();
        return Err(Skip {
            reason: format!("no function matches {}", pattern.quoted()),
            names,
            failed: false,
        });
    }
    Ok(plan)
}

/// Processes to trace, resolved from the command line.
#[derive(Debug, Clone)]
pub enum Selection {
    Pids(Vec<u32>),
    Binary(PathBuf),
    HostWide,
}

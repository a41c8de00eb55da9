//! Turning the raw stacks of `funclatency --stacks` into the callers a report shows: the stacks
//! are read from the kernel's map and symbolized with the binaries the engine planned.
use std::collections::HashMap;

use aya::Ebpf;
use goprobe_inspect::symbolize::{Kind, Line, Location, Stack, Symbolizer};

use crate::{
    kernel::stacks::StackReader,
    outputs::StackRow,
    pipeline::by_stack::{LatencyByStack, RawStack, StackLatencies},
    plan::InlineCall,
};

/// Symbolizes `funclatency --stacks` reports.
#[derive(Default)]
pub struct StackView {
    symbolizer: Symbolizer,
    reader: StackReader,
    /// Function id → (binary, file offsets of its RETs), to place the binary of a process that
    /// exited before its maps were read.
    returns: HashMap<u32, ((u64, u64), Vec<u64>)>,
    /// Function id → file offset where inlined copies of it end → the calls they stand for.
    inline_exits: HashMap<u32, HashMap<u64, Vec<InlineCall>>>,
}

impl StackView {
    /// Open every traced binary while a process of it is alive, and note its functions' RETs
    /// and where their inlined copies end.
    pub fn preload(&mut self, tracer: &super::Tracer) {
        for (func, exits) in tracer.inline_calls() {
            // A function's copies are all planned with its binary: known once, known whole.
            self.inline_exits
                .entry(*func)
                .or_insert_with(|| exits.clone());
        }
        for (_, func, offset) in tracer.return_sites() {
            if let Some(entry) = self.returns.get_mut(&func) {
                if !entry.1.contains(&offset) {
                    entry.1.push(offset);
                }
                continue;
            }
            if let Some(info) = tracer.functions.get(func)
                && let Some(binary) = self.symbolizer.preload(&info.binary)
            {
                self.returns.insert(func, (binary, vec![offset]));
            }
        }
    }

    pub fn observe_pids(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            self.symbolizer.observe(pid);
        }
    }

    /// Note the processes seen so far, so their maps are read while they run.
    pub fn observe(&mut self, by: &LatencyByStack) {
        for &(_, pid) in by.by_call.keys() {
            self.symbolizer.observe(pid);
        }
    }

    /// The calling stacks of one (function, pid), merged by symbolized caller stack, slowest first.
    /// `traced`: the function's name.
    pub fn rows(
        &mut self,
        ebpf: &Ebpf,
        pid: u32,
        (func, traced): (u32, &str),
        stacks: &HashMap<RawStack, StackLatencies>,
    ) -> Vec<StackRow> {
        let mut merged: HashMap<Stack, StackLatencies> = HashMap::new();
        for ((hash, leaf), latencies) in stacks {
            let stack = match self.reader.get(ebpf, *hash) {
                Some(trace) => {
                    // A process gone before its maps were read: place its binary from the RET
                    // that was hit (the stack's first PC).
                    self.symbolizer.observe(pid);
                    if let Some((binary, offsets)) = self.returns.get(&func) {
                        self.symbolizer
                            .assume_one_of(pid, *binary, offsets, trace.pcs[0]);
                    }
                    let mut stack = self.symbolizer.user_stack(pid, &trace, *leaf, None);
                    // Walked where an inlined copy ends: that PC is the caller's code after the
                    // copy, which may already be inside other inlined code (the next inlined
                    // call, or a function the traced one calls). The call's own frame is where
                    // the copy's call is written.
                    if let Some(first) = stack.first_mut()
                        && first.kind == Kind::Go
                        && let Some(call) = self.inline_call(pid, func, trace.pcs[0], first)
                    {
                        *first = call;
                        stack
                    } else {
                        // Walked at a RET, the innermost location is the traced function
                        // itself, where calls differ only by which RET they took: leave it out.
                        if stack.len() > 1
                            && stack[0].kind == Kind::Go
                            && (stack[0].function() == traced
                                || stack[0].lines.first().is_some_and(|l| l.function == traced))
                        {
                            stack.remove(0);
                        }
                        stack
                    }
                }
                None => vec![Location {
                    address: 0,
                    kind: Kind::Truncated,
                    mapping: None,
                    lines: vec![Line {
                        function: "[truncated: stack not kept (map full)]".into(),
                        file: String::new(),
                        line: 0,
                    }],
                }],
            };
            merged.entry(stack).or_default().merge(latencies);
        }
        let mut rows: Vec<StackRow> = merged
            .into_iter()
            .map(|(stack, latencies)| StackRow { stack, latencies })
            .collect();
        rows.sort_by(|a, b| {
            b.latencies
                .quantile_ns(0.99)
                .cmp(&a.latencies.quantile_ns(0.99))
                .then(b.latencies.count.cmp(&a.latencies.count))
                .then_with(|| a.stack.cmp(&b.stack))
        });
        rows
    }

    /// If runtime address `pc` of process `pid` is where inlined copies of function `func`
    /// end, the location of their call (in place of `at_exit`, the location of `pc`).
    fn inline_call(
        &mut self,
        pid: u32,
        func: u32,
        pc: u64,
        at_exit: &Location,
    ) -> Option<Location> {
        let exits = self.inline_exits.get(&func)?;
        let offset = self.symbolizer.file_offset(pid, pc)?;
        let calls = exits.get(&offset)?.clone();
        let candidates: Vec<Location> = calls
            .iter()
            .map(|call| {
                call.offset
                    .and_then(|o| self.symbolizer.locate_offset(pid, pc, o))
                    .filter(|loc| loc.kind == Kind::Go)
                    .unwrap_or_else(|| call_from_names(call, at_exit))
            })
            .collect();
        Some(common_call(candidates, at_exit))
    }
}

/// The location of an inlined call known by its caller's name and line only (DWARF): that line,
/// then the frames of `at_exit` outside the caller, if the exit is still inside it.
fn call_from_names(call: &InlineCall, at_exit: &Location) -> Location {
    let mut lines = vec![Line {
        function: call.caller.clone(),
        file: call.file.clone(),
        line: call.line,
    }];
    match at_exit.lines.iter().position(|l| l.function == call.caller) {
        Some(i) => lines.extend_from_slice(&at_exit.lines[i + 1..]),
        None => lines.extend(
            at_exit
                .lines
                .last()
                .filter(|l| l.function != call.caller)
                .cloned(),
        ),
    }
    Location {
        lines,
        ..at_exit.clone()
    }
}

/// One location for the calls whose copies end at one address. Copies of one function at several
/// calls can share their end (both branches of an `if` join there): then the call cannot be told
/// apart, and the location keeps the frames they share; where their lines differ in one function,
/// that function with line 0.
fn common_call(mut candidates: Vec<Location>, at_exit: &Location) -> Location {
    candidates.dedup_by(|a, b| a.lines == b.lines);
    if candidates.len() == 1 {
        return candidates.remove(0);
    }
    // Lines are innermost first: compare from the outermost.
    let depth = candidates.iter().map(|c| c.lines.len()).min().unwrap_or(0);
    let outer = |c: &Location, i: usize| c.lines[c.lines.len() - 1 - i].clone();
    let mut shared = Vec::new();
    for i in 0..depth {
        let line = outer(&candidates[0], i);
        if candidates.iter().all(|c| outer(c, i) == line) {
            shared.push(line);
            continue;
        }
        if candidates
            .iter()
            .all(|c| outer(c, i).function == line.function)
        {
            let same_file = candidates.iter().all(|c| outer(c, i).file == line.file);
            shared.push(Line {
                line: 0,
                file: if same_file { line.file } else { String::new() },
                ..line
            });
        }
        break;
    }
    shared.reverse();
    Location {
        lines: if shared.is_empty() {
            at_exit.lines.clone()
        } else {
            shared
        },
        ..at_exit.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goprobe_common::{LatencyEvent, LeafContext, StackLatencyEvent};

    fn line(function: &str, line: u32) -> Line {
        Line {
            function: function.into(),
            file: "main.go".into(),
            line,
        }
    }

    fn location(lines: Vec<Line>) -> Location {
        Location {
            address: 0x1000,
            kind: Kind::Go,
            mapping: None,
            lines,
        }
    }

    #[test]
    fn inlined_calls_sharing_their_end() {
        let at_exit = location(vec![line("main.callee", 3), line("main.caller", 20)]);
        let one = location(vec![line("main.caller", 12)]);
        // One call, found at every exit of its copy.
        assert_eq!(
            common_call(vec![one.clone(), one.clone()], &at_exit).lines,
            one.lines
        );
        // Two calls in one function: that function, its line unknown.
        let other = location(vec![line("main.caller", 14)]);
        assert_eq!(
            common_call(vec![one, other], &at_exit).lines,
            vec![line("main.caller", 0)]
        );
        // Two calls in two inlined functions of one caller: the frames they share.
        let a = location(vec![line("main.a", 5), line("main.caller", 30)]);
        let b = location(vec![line("main.b", 7), line("main.caller", 30)]);
        assert_eq!(
            common_call(vec![a, b], &at_exit).lines,
            vec![line("main.caller", 30)]
        );
    }

    #[test]
    fn inlined_call_from_names_only() {
        let call = InlineCall {
            caller: "main.helper".into(),
            file: "main.go".into(),
            line: 9,
            offset: None,
        };
        // The exit is still inside the caller (itself inlined): its outer frames follow.
        let inside = location(vec![
            line("main.next", 2),
            line("main.helper", 10),
            line("main.main", 40),
        ]);
        assert_eq!(
            call_from_names(&call, &inside).lines,
            vec![line("main.helper", 9), line("main.main", 40)]
        );
        // The exit is past the caller: the function whose code holds it follows.
        let past = location(vec![line("main.next", 2), line("main.main", 41)]);
        assert_eq!(
            call_from_names(&call, &past).lines,
            vec![line("main.helper", 9), line("main.main", 41)]
        );
    }

    #[test]
    fn latency_per_stack() {
        let mut by = LatencyByStack::default();
        for (stack, ns) in [(7, 100), (7, 300), (9, 5_000_000), (0, 1)] {
            by.record(&StackLatencyEvent {
                call: LatencyEvent {
                    tgid: 1,
                    func: 2,
                    latency_ns: ns,
                    ..Default::default()
                },
                stack,
                leaf: LeafContext::default(),
            });
        }
        assert_eq!(by.missing, 1);
        let stacks = &by.by_call[&(2, 1)];
        let slow = &stacks[&(9, LeafContext::default())];
        assert_eq!((slow.count, slow.max_ns), (1, 5_000_000));
        let fast = &stacks[&(7, LeafContext::default())];
        assert_eq!(fast.count, 2);
        assert!(
            (99..=101).contains(&fast.quantile_ns(0.5)),
            "{}",
            fast.quantile_ns(0.5)
        );
    }
}

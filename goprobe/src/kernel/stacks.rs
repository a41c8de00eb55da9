//! Reading what the stack programs left in their maps: stacks by hash, per-stack call counts
//! (`stackcount`) and the stack programs' own counters.
use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
};
use goprobe_common::{StackCountKey, StackTrace, stack::counter};

/// Stacks read from the `STACKS` map, cached by hash (a hash names one stack for the whole run).
#[derive(Default)]
pub struct StackReader {
    cache: HashMap<u64, Option<StackTrace>>,
}

impl StackReader {
    pub fn get(&mut self, ebpf: &Ebpf, hash: u64) -> Option<StackTrace> {
        if hash == 0 {
            return None;
        }
        if let Some(trace) = self.cache.get(&hash) {
            return *trace;
        }
        let trace = ebpf
            .map(super::maps::name::STACKS)
            .and_then(|m| BpfHashMap::<&MapData, u64, StackTrace>::try_from(m).ok())
            .and_then(|m| m.get(&hash, 0).ok());
        // Cache only hits: a miss may be a stack that was not written yet.
        if trace.is_some() {
            self.cache.insert(hash, trace);
        }
        trace
    }
}

/// `stackcount`'s counters: calls per (process, function, stack).
pub fn read_stack_counts(ebpf: &Ebpf) -> Vec<(StackCountKey, u64)> {
    ebpf.map(super::maps::name::STACK_COUNTS)
        .and_then(|m| BpfHashMap::<&MapData, StackCountKey, u64>::try_from(m).ok())
        .map(|m| m.iter().filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The stack health counters, summed over CPUs, with their names.
pub fn counters(ebpf: &Ebpf) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = counter::NAMES.iter().map(|&n| (n, 0)).collect();
    if let Some(array) = ebpf
        .map(super::maps::name::STACK_COUNTERS)
        .and_then(|m| PerCpuArray::<&MapData, u64>::try_from(m).ok())
    {
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = array.get(&(i as u32), 0) {
                slot.1 = values.iter().sum();
            }
        }
    }
    out
}

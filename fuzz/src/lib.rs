//! goprobe's parsers of user input, for the fuzz targets: the very source files the goprobe
//! binary compiles, included by path. The goprobe package has no library target, and depending
//! on it would run its build script (the eBPF programs, with a nightly and bpf-linker); these
//! files depend only on crates (and goprobe-inspect), which is what lets them be shared this way.
//! The modules sit at the paths the files expect (`crate::plan::Pattern`,
//! `crate::engine::budget::parse_percent`).

/// `goprobe/src/plan/pattern.rs`: function patterns and closest-name suggestions.
#[path = "../../goprobe/src/plan/pattern.rs"]
mod pattern;

pub mod plan {
    //! Where the config expects patterns.
    pub use crate::pattern::*;
}

/// `goprobe/src/engine/budget.rs`: the overhead budget, whose percentages the config parses.
#[path = "../../goprobe/src/engine/budget.rs"]
pub mod budget;

pub mod engine {
    //! Where the config expects the budget.
    pub use crate::budget;
}

/// `goprobe/src/pipeline/times.rs`: times, ranges and durations.
#[path = "../../goprobe/src/pipeline/times.rs"]
pub mod times;

/// `goprobe/src/outputs/query_string.rs`: the agent API's query strings.
#[path = "../../goprobe/src/outputs/query_string.rs"]
pub mod query_string;

/// `goprobe/src/commands/agent/config.rs`: the agent's TOML config.
#[path = "../../goprobe/src/commands/agent/config.rs"]
pub mod config;

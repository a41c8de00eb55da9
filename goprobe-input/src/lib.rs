//! goprobe's parsers of what users give it, untrusted all: function patterns (`go:NAME`, globs,
//! regular expressions) and the closest names to suggest, times and ranges (`-1h`, `@UNIX`,
//! RFC 3339), the agent API's query strings, and the agent's TOML config. A library of their own,
//! so that the goprobe binary and the fuzz targets (`fuzz/`) use the same code.

pub mod agent_config;
pub mod args;
pub mod packs;
pub mod pattern;
pub mod query_string;
pub mod times;

//! Command-line interface. Flags follow bcc's funclatency where it has them, so its users
//! need no new habits; every flag documents its default.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "goprobe",
    version,
    about = "Trace Go functions with eBPF: latency histograms that are safe and correct for Go",
    long_about = "Trace Go functions with eBPF: latency histograms that are safe and correct for Go.\n\n\
                  goprobe never uses uretprobes on Go code: it probes each function's stack-check \
                  branch on entry and every RET instruction, and pairs them per goroutine.",
    propagate_version = true,
    // A fixed width keeps --help the same in every terminal (and in its snapshot test).
    term_width = 100
)]
#[deny(missing_docs)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum Command {
    /// Time Go functions and print latency histograms (like bcc's funclatency)
    Funclatency(FunclatencyArgs),
    /// List the functions of a Go binary that can be traced, and how
    Symbols(SymbolsArgs),
    /// Run the always-on daemon: probes from a config file, /metrics, an archive on the host
    Agent(AgentArgs),
    /// Print the archived latency histograms of a time range
    Query(QueryArgs),
    /// Compare two time ranges of the archive: how count, p50, p99 and max moved per function
    Diff(DiffArgs),
    /// Count the distinct call stacks at entry to Go functions (like bcc's stackcount)
    Stackcount(StackcountArgs),
    /// Sample the CPU of Go processes and write a pprof profile (or folded stacks, a flame graph)
    Profile(ProfileArgs),
    /// Helpers for `cargo xtask bench` (not a stable interface)
    #[command(hide = true)]
    Dev(DevArgs),
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct DevArgs {
    #[command(subcommand)]
    pub command: DevCommand,
}

#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum DevCommand {
    /// A function's instructions as JSON lines, with the file offset a probe on each takes
    Insns(DevInsnsArgs),
    /// Probes that do nothing at file offsets, until SIGINT/SIGTERM or the process exits
    Attach(DevAttachArgs),
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct DevInsnsArgs {
    /// A Go binary
    pub binary: PathBuf,
    /// The function's full name
    pub function: String,
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct DevAttachArgs {
    /// Only this process
    #[arg(short = 'p', long = "pid")]
    pub pid: Option<u32>,
    /// Every process running this binary
    #[arg(short = 'b', long = "binary", conflicts_with = "pid")]
    pub binary: Option<PathBuf>,
    /// File offsets of instruction boundaries (decimal or 0x hex), from `goprobe dev insns`
    #[arg(required = true)]
    pub offsets: Vec<String>,
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = FUNCLATENCY_EXAMPLES)]
pub struct FunclatencyArgs {
    /// What to trace: `go:NAME` (a Go function by its full name, e.g. `fmt.Println`,
    /// `net/http.(*conn).serve`, `main.main.func1`) or `PATH:NAME` (a function of that binary).
    /// `*` and `?` glob over the whole NAME (`*` right after `(` is the literal pointer receiver,
    /// as in `(*T)`); with -r, NAME is a regular expression
    pub pattern: String,

    /// Trace only this process (repeatable). Default: every Go process on the host whose binary
    /// has a matching function, including processes that start later
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Trace only processes running this binary (now and later)
    #[arg(
        short = 'b',
        long = "binary",
        value_name = "PATH",
        conflicts_with = "pids"
    )]
    pub binary: Option<PathBuf>,

    /// Microsecond histogram (default: nanoseconds)
    #[arg(short = 'u', long = "microseconds", conflicts_with = "milliseconds")]
    pub microseconds: bool,

    /// Millisecond histogram (default: nanoseconds)
    #[arg(short = 'm', long = "milliseconds")]
    pub milliseconds: bool,

    /// Print and reset the histograms every SECONDS (default: once, at the end)
    #[arg(short = 'i', long = "interval", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,

    /// Stop after SECONDS (default: run until Ctrl-C or SIGTERM)
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Print a timestamp with each output
    #[arg(short = 'T', long = "timestamp")]
    pub timestamp: bool,

    /// One histogram per function (default: one per process, all matched functions together)
    #[arg(short = 'F', long = "function")]
    pub per_function: bool,

    /// NAME is a regular expression, searched anywhere in the function name (default: glob, whole name)
    #[arg(short = 'r', long = "regex")]
    pub regex: bool,

    /// JSON lines on stdout: one object per function and process, per interval
    #[arg(long = "json")]
    pub json: bool,

    /// Say on stderr what is attached where, which processes were skipped and why, and goprobe's
    /// own counters at the end
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,

    /// Break latency down by calling stack: for each distinct stack the calls returned to, their
    /// count, p50, p99 and max (stacks are walked at the RET with frame pointers; default: off)
    #[arg(long = "stacks")]
    pub stacks: bool,

    /// Keep stacks only of calls at least this slow, e.g. 500us, 10ms, 1s (implies --stacks;
    /// default: the stacks of every call)
    #[arg(long = "slower-than", value_name = "DURATION", value_parser = parse_duration)]
    pub slower_than: Option<Duration>,
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = STACKCOUNT_EXAMPLES)]
pub struct StackcountArgs {
    /// What to count: `go:NAME` or `PATH:NAME`, as for funclatency (`*` and `?` glob; with -r,
    /// NAME is a regular expression)
    pub pattern: String,

    /// Only this process (repeatable). Default: every Go process on the host whose binary has a
    /// matching function, including processes that start later
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only processes running this binary (now and later)
    #[arg(
        short = 'b',
        long = "binary",
        value_name = "PATH",
        conflicts_with = "pids"
    )]
    pub binary: Option<PathBuf>,

    /// Stop after SECONDS (default: run until Ctrl-C, SIGTERM, or the end of every -p process)
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// NAME is a regular expression, searched anywhere in the function name (default: glob)
    #[arg(short = 'r', long = "regex")]
    pub regex: bool,

    /// Print folded stacks (`root;...;leaf COUNT`, for flamegraph tools) instead of the stack list
    #[arg(long = "folded")]
    pub folded: bool,

    /// Also write the stacks as a gzipped pprof profile (sample type calls/count) to FILE
    #[arg(long = "pprof", value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Also draw the stacks as an SVG flame graph into FILE
    #[arg(long = "svg", value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Say on stderr what is attached where, and goprobe's own counters at the end
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = PROFILE_EXAMPLES)]
pub struct ProfileArgs {
    /// Sample this process (repeatable)
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        required_unless_present = "binary"
    )]
    pub pids: Vec<u32>,

    /// Sample every process running this binary (now and later)
    #[arg(
        short = 'b',
        long = "binary",
        value_name = "PATH",
        conflicts_with = "pids"
    )]
    pub binary: Option<PathBuf>,

    /// Samples per second on each CPU
    #[arg(short = 'F', long = "frequency", value_name = "HZ", default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,

    /// Stop after SECONDS (default: run until Ctrl-C, SIGTERM, or the end of every -p process)
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Write a gzipped pprof CPU profile (samples/count, cpu/nanoseconds) to FILE, for
    /// `go tool pprof`
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Print folded stacks (`root;...;leaf COUNT`) on stdout
    #[arg(long = "folded")]
    pub folded: bool,

    /// Draw an SVG flame graph into FILE
    #[arg(long = "svg", value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Also record the kernel stack of samples taken in the kernel (system calls, page faults)
    #[arg(long = "kernel")]
    pub kernel: bool,

    /// Say on stderr which processes are sampled, and goprobe's own counters at the end
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

/// A duration with its unit: `250ns`, `10us` (or `10µs`), `5ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. 500us, 10ms or 1s"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 500us, 10ms or 1s"))?;
    let ns_per = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use ns, us, ms, s or m"
            ));
        }
    };
    Ok(Duration::from_nanos((value * ns_per).round() as u64))
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SYMBOLS_EXAMPLES)]
pub struct SymbolsArgs {
    /// A Go binary, or the PID of a running Go process
    pub binary: String,

    /// Only functions matching this glob (`*`, `?`); default: all
    pub pattern: Option<String>,

    /// PATTERN is a regular expression, searched anywhere in the name
    #[arg(short = 'r', long = "regex")]
    pub regex: bool,

    /// One JSON object per function
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = AGENT_EXAMPLES)]
pub struct AgentArgs {
    /// The config file (TOML): probes (functions and the processes they apply to), histogram
    /// buckets, archive and HTTP settings. See the README for every setting
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "GOPROBE_CONFIG"
    )]
    pub config: PathBuf,

    /// Check the config file and exit (0 if it is valid, 2 with the error's file:line if not)
    #[arg(long = "check")]
    pub check: bool,
}

/// Where `query` and `diff` read the archive.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct SourceArgs {
    /// The running agent's HTTP address [default: http://127.0.0.1:9476]
    #[arg(
        long = "url",
        value_name = "URL",
        env = "GOPROBE_URL",
        conflicts_with = "archive"
    )]
    pub url: Option<String>,

    /// Read this archive file directly instead (only while no agent holds it open)
    #[arg(long = "archive", value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// A file holding the bearer token the agent requires (http.bearer_token_file)
    #[arg(long = "token-file", value_name = "FILE", env = "GOPROBE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = QUERY_EXAMPLES)]
pub struct QueryArgs {
    /// Start of the range: `now`, `-DURATION` (e.g. `-1h`), `@UNIX_SECONDS` or RFC 3339
    #[arg(
        long = "from",
        value_name = "TIME",
        default_value = "-1h",
        allow_hyphen_values = true
    )]
    pub from: String,

    /// End of the range (same forms as --from)
    #[arg(
        long = "to",
        value_name = "TIME",
        default_value = "now",
        allow_hyphen_values = true
    )]
    pub to: String,

    /// Only functions matching this glob (`*`, `?`), e.g. 'main.handle*'
    #[arg(short = 'f', long = "function", value_name = "GLOB")]
    pub function: Option<String>,

    /// JSON on stdout: one object with the range and a histogram per function and service
    #[arg(long = "json")]
    pub json: bool,

    /// Microsecond histogram (default: nanoseconds)
    #[arg(short = 'u', long = "microseconds", conflicts_with = "milliseconds")]
    pub microseconds: bool,

    /// Millisecond histogram (default: nanoseconds)
    #[arg(short = 'm', long = "milliseconds")]
    pub milliseconds: bool,

    /// Instead of histograms, write the archived CPU profiles of the range, merged, to FILE
    /// (gzipped pprof, for `go tool pprof`)
    #[arg(long = "profile", value_name = "FILE")]
    pub profile: Option<PathBuf>,

    /// With --profile: only this process's profiles (default: every profiled process)
    #[arg(long = "pid", value_name = "PID", requires = "profile")]
    pub pid: Option<u32>,

    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = DIFF_EXAMPLES)]
pub struct DiffArgs {
    /// The range to compare against, `FROM..TO` (times as in `query --from`), e.g. -2h..-1h
    #[arg(allow_hyphen_values = true)]
    pub base: String,

    /// The range to compare, `FROM..TO`, e.g. -1h..now
    #[arg(allow_hyphen_values = true)]
    pub compare: String,

    /// Only functions matching this glob (`*`, `?`)
    #[arg(short = 'f', long = "function", value_name = "GLOB")]
    pub function: Option<String>,

    /// JSON on stdout instead of the table
    #[arg(long = "json")]
    pub json: bool,

    /// Instead of histograms, write COMPARE's CPU profiles minus BASE's to FILE, as
    /// `go tool pprof -diff_base` shows a change (gzipped pprof)
    #[arg(long = "profile", value_name = "FILE")]
    pub profile: Option<PathBuf>,

    /// With --profile: only this process's profiles (default: every profiled process)
    #[arg(long = "pid", value_name = "PID", requires = "profile")]
    pub pid: Option<u32>,

    #[command(flatten)]
    pub source: SourceArgs,
}

/// Where the agent listens by default: loopback only, so nothing is exposed unless configured;
/// `goprobe query` and `diff` ask there unless told otherwise.
pub const DEFAULT_AGENT_LISTEN: &str = "127.0.0.1:9476";

const AGENT_EXAMPLES: &str = "\
Examples:
  goprobe agent --config /etc/goprobe/agent.toml
  goprobe agent --config agent.toml --check        # validate only
  systemd-run --unit goprobe goprobe agent --config /etc/goprobe/agent.toml

SIGHUP reloads the config (a config with an error is refused and the running one stays);
SIGTERM or Ctrl-C writes the last interval to the archive, detaches and exits 0.";

const QUERY_EXAMPLES: &str = "\
Examples:
  goprobe query                                     # the last hour, from the running agent
  goprobe query --from -10m -f 'main.handle*' -u
  goprobe query --from 2026-11-27T09:00:00Z --to 2026-11-27T10:00:00Z --json
  goprobe query --archive /var/lib/goprobe/archive.redb --from -1d   # agent stopped
  goprobe query --from -30m --profile cpu.pb.gz && go tool pprof -top cpu.pb.gz";

const DIFF_EXAMPLES: &str = "\
Examples:
  goprobe diff -2h..-1h -1h..now                    # the last hour against the one before
  goprobe diff -25h..-24h -1h..now -f 'main.*'     # against the same hour yesterday
  goprobe diff @1767225600..@1767229200 -1h.. --json
  goprobe diff -2h..-1h -1h..now --profile cpu-diff.pb.gz && go tool pprof -top cpu-diff.pb.gz

In the table, ▲ marks a latency that rose by more than 10 %, ▼ one that fell by more than 10 %.";

const FUNCLATENCY_EXAMPLES: &str = "\
Examples:
  goprobe funclatency 'go:fmt.Println'                  # every Go process that has it, and new ones
  goprobe funclatency -p 4242 -m 'go:database/sql.(*DB).QueryContext'
  goprobe funclatency -b /usr/bin/caddy -F 'go:net/http.*' -i 5 -d 60
  goprobe funclatency -u --json -d 10 '/usr/bin/caddy:net/http.(*conn).serve'
  goprobe funclatency -r 'go:main\\.handle.*'
  goprobe funclatency -p 4242 -m --slower-than 10ms 'go:main.(*Store).Get'  # who sees slow calls?

Output: bcc's funclatency layout (log2 histogram, avg/total/count) plus p50/p90/p99/p99.9/max,
and a `lost` line if the ring buffer overflowed. --stacks adds, per histogram, each calling stack
with its count, p50, p99 and max, slowest first. Ctrl-C, SIGTERM or the end of -d prints what was
collected, detaches every probe and exits 0. Errors print one line and exit 2.";

const STACKCOUNT_EXAMPLES: &str = "\
Examples:
  goprobe stackcount -p 4242 'go:database/sql.(*DB).QueryContext'
  goprobe stackcount -b /usr/bin/caddy -d 10 --folded 'go:net/http.(*conn).serve' > stacks.folded
  goprobe stackcount -p 4242 -d 30 --svg calls.svg --pprof calls.pb.gz 'go:main.handle*'

Output: each distinct stack, innermost frame first with file:line and inlined frames marked, then
its count; least frequent first, like bcc's stackcount. A stack that cannot be followed further
ends with a [truncated: ...] frame saying why (a runtime stack switch, C code).";

const PROFILE_EXAMPLES: &str = "\
Examples:
  goprobe profile -p 4242 -d 30 -o cpu.pb.gz && go tool pprof -top cpu.pb.gz
  goprobe profile -b /usr/bin/caddy -F 199 -d 10 --svg cpu.svg
  goprobe profile -p 4242 -d 10 --kernel --folded > cpu.folded

Samples on-CPU time with a perf event on every CPU and walks the Go stack with frame pointers;
the process needs no pprof endpoint. Without -o, --svg or --folded, prints the top functions.";

const SYMBOLS_EXAMPLES: &str = "\
Examples:
  goprobe symbols /usr/bin/caddy 'net/http.*'
  goprobe symbols 4242 'main.*' --json";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10h").unwrap_err().contains("unknown unit"));
    }
}

//! `goprobe query` and `goprobe diff`: histograms of any time range from the agent's archive,
//! and how they moved between two ranges. The same summaries back the agent's JSON API
//! (`/api/v1/query`, `/api/v1/diff`), which the commands use while the agent runs; with
//! `--archive` they read the database file directly (when no agent holds it).
use std::{path::PathBuf, time::Duration};

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;

use crate::{
    cli::{DEFAULT_AGENT_LISTEN as DEFAULT_LISTEN, parse_duration},
    outputs::{
        http::{HttpError, http_get_within, http_request_within},
        query_string::percent_encode,
        tables::{write_diff_table, write_query_text},
    },
    pipeline::{
        Unit,
        archive::Archive,
        history::{Range, answer_diff, answer_query, check_range, now_ms, parse_range, parse_time},
    },
    plan::Pattern,
};

/// `goprobe query`'s arguments.
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

    /// Give up on the agent after this long (connecting and the whole answer), e.g. 500ms,
    /// 2m
    #[arg(long = "timeout", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
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

/// Where `query` and `diff` read from.
enum Source {
    Archive(Archive),
    Url {
        base: String,
        token: Option<String>,
        timeout: Duration,
    },
}

fn source(args: &SourceArgs) -> anyhow::Result<Source> {
    if let Some(path) = &args.archive {
        return Ok(Source::Archive(Archive::open_existing(path)?));
    }
    let token = match &args.token_file {
        Some(path) => Some(
            crate::commands::agent::config::read_token_file(path)
                .map_err(|e| anyhow::anyhow!("--token-file: {e}"))?,
        ),
        None => None,
    };
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{DEFAULT_LISTEN}"));
    Ok(Source::Url {
        base: base.trim_end_matches('/').to_string(),
        token,
        timeout: args.timeout,
    })
}

fn function_pattern(glob: Option<&str>) -> anyhow::Result<Option<Pattern>> {
    Ok(glob.map(|g| Pattern::name_only(g, false)).transpose()?)
}

/// `query --profile` / `diff --profile`: from the archive or the agent, into `path`.
fn write_profile(
    source: Source,
    ranges: &[Range],
    pid: Option<u32>,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let bytes = match source {
        Source::Archive(archive) => crate::outputs::pprof::answer_profile(&archive, ranges, pid)?,
        Source::Url {
            base,
            token,
            timeout,
        } => {
            let at = |ms: u64| ms as f64 / 1000.0;
            let mut url = match ranges {
                [r] => format!(
                    "{base}/api/v1/profile?from=@{}&to=@{}",
                    at(r.from_ms),
                    at(r.to_ms)
                ),
                [a, b] => format!(
                    "{base}/api/v1/profile?base=@{}..@{}&compare=@{}..@{}",
                    at(a.from_ms),
                    at(a.to_ms),
                    at(b.from_ms),
                    at(b.to_ms)
                ),
                _ => anyhow::bail!("one or two ranges"),
            };
            if let Some(pid) = pid {
                url.push_str(&format!("&pid={pid}"));
            }
            http_request_within(&url, token.as_deref(), None, timeout).map_err(|e| match e {
                HttpError::Unreachable(host, e) => anyhow::anyhow!(
                    "cannot reach the agent at http://{host}: {e} (is `goprobe agent` running? give --url, or --archive to read an archive file)"
                ),
                e => anyhow::anyhow!("{url}: {e}"),
            })?
        }
    };
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "goprobe: wrote {} (go tool pprof {})",
        path.display(),
        path.display()
    );
    Ok(())
}

/// The agent's JSON answer to `url` (an /api/v1 request), narrowed to the functions `function`
/// matches; `what` names the answer in an error.
fn ask_agent<T: serde::de::DeserializeOwned>(
    url: &str,
    function: Option<&str>,
    token: Option<&str>,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<T> {
    let mut url = url.to_string();
    if let Some(f) = function {
        url.push_str(&format!("&function={}", percent_encode(f)));
    }
    let body = http_get_within(&url, token, timeout)?;
    serde_json::from_str(&body).with_context(|| format!("the agent's answer is not {what} JSON"))
}

/// `answer` on stdout: one JSON line with --json, else as `text` writes it.
fn print_answer<T: serde::Serialize>(
    json: bool,
    answer: &T,
    text: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, answer)?;
        writeln!(stdout)?;
    } else {
        text(&mut stdout)?;
    }
    Ok(())
}

pub fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let now = now_ms();
    let range = Range {
        from_ms: parse_time(&args.from, now).map_err(anyhow::Error::msg)?,
        to_ms: parse_time(&args.to, now).map_err(anyhow::Error::msg)?,
    };
    check_range(range).map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.profile {
        return write_profile(source(&args.source)?, &[range], args.pid, path);
    }
    let answer = match source(&args.source)? {
        Source::Archive(archive) => {
            let records = archive.read(range.from_ms, range.to_ms)?;
            answer_query(
                &records,
                range,
                function_pattern(args.function.as_deref())?.as_ref(),
            )
        }
        Source::Url {
            base,
            token,
            timeout,
        } => ask_agent(
            &format!(
                "{base}/api/v1/query?from=@{}&to=@{}",
                range.from_ms as f64 / 1000.0,
                range.to_ms as f64 / 1000.0
            ),
            args.function.as_deref(),
            token.as_deref(),
            timeout,
            "query",
        )?,
    };
    let unit = if args.milliseconds {
        Unit::Milliseconds
    } else if args.microseconds {
        Unit::Microseconds
    } else {
        Unit::Nanoseconds
    };
    print_answer(args.json, &answer, |out| {
        write_query_text(out, &answer, unit)
    })
}

pub fn run_diff(args: DiffArgs) -> anyhow::Result<()> {
    let now = now_ms();
    let base = parse_range(&args.base, now).map_err(|e| anyhow::anyhow!("BASE_RANGE: {e}"))?;
    let compare =
        parse_range(&args.compare, now).map_err(|e| anyhow::anyhow!("COMPARE_RANGE: {e}"))?;
    if let Some(path) = &args.profile {
        return write_profile(source(&args.source)?, &[base, compare], args.pid, path);
    }
    let diff = match source(&args.source)? {
        Source::Archive(archive) => {
            let a = archive.read(base.from_ms, base.to_ms)?;
            let b = archive.read(compare.from_ms, compare.to_ms)?;
            answer_diff(
                &a,
                &b,
                base,
                compare,
                function_pattern(args.function.as_deref())?.as_ref(),
            )
        }
        Source::Url {
            base: url,
            token,
            timeout,
        } => ask_agent(
            &format!(
                "{url}/api/v1/diff?base=@{}..@{}&compare=@{}..@{}",
                base.from_ms as f64 / 1000.0,
                base.to_ms as f64 / 1000.0,
                compare.from_ms as f64 / 1000.0,
                compare.to_ms as f64 / 1000.0
            ),
            args.function.as_deref(),
            token.as_deref(),
            timeout,
            "diff",
        )?,
    };
    print_answer(args.json, &diff, |out| write_diff_table(out, &diff))
}

//! The agent's configuration file (TOML). Every value is checked while it is read, so an error
//! names the file, line and column of the value at fault; a config with any error is refused
//! whole, never applied in part.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:9476"
//!
//! [archive]
//! path = "/var/lib/goprobe/archive.redb"
//!
//! [[probe]]
//! functions = ["go:main.handle*"]
//! exe = ["/usr/local/bin/*"]
//! ```
use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use goprobe_inspect::io_message;
use regex::Regex;
use serde::{Deserialize, Deserializer, de};

use crate::pattern::Pattern;

/// Where the agent listens by default: loopback only, so nothing is exposed unless configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9476";
pub const DEFAULT_ARCHIVE: &str = "/var/lib/goprobe/archive.redb";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", .path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub histogram: HistogramSection,
    #[serde(default)]
    pub archive: ArchiveSection,
    #[serde(default)]
    pub otlp: Option<OtlpSection>,
    #[serde(default)]
    pub kubernetes: KubernetesSection,
    #[serde(default)]
    pub profile: ProfileSection,
    /// What to trace, in which processes.
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// How often /proc is scanned for processes that started, exec'd or exited.
    pub scan_interval: Seconds,
    /// The share of one CPU goprobe's probes may cost each traced process ("1%"; "0": no
    /// budget). Past it, the hottest functions are detached from that process.
    pub overhead_budget: Percent,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            scan_interval: Seconds(Duration::from_secs(1)),
            overhead_budget: Percent(0.01),
        }
    }
}

/// A share given as a percentage, e.g. "1%" (0.01).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_percent(&text)
            .map(Percent)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address of the read-only HTTP server (/metrics and the JSON API).
    pub listen: SocketAddr,
    /// A file holding a bearer token that every request must present.
    pub bearer_token_file: Option<PathBuf>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            bearer_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramSection {
    /// Upper bounds (`le`) of the Prometheus histogram buckets, in seconds, increasing.
    pub buckets: Buckets,
    /// Add a `pid` label to every series (off by default: PIDs make cardinality unbounded).
    pub pid_label: bool,
    /// Series without a call for this long leave /metrics (and OTLP): containers that are
    /// gone stop costing series.
    pub idle_series_ttl: Seconds,
    /// Split each call's time by what its goroutine was doing (`funclatency --split`), exported
    /// as `goprobe_function_time_seconds_total{state=...}`. Read at start only.
    pub split: bool,
    /// `by` and packs: distinct argument values kept per function; later ones are labelled
    /// `other`, so the series stay bounded.
    #[serde(default = "default_max_values")]
    pub max_values: usize,
}

impl Default for HistogramSection {
    fn default() -> Self {
        Self {
            buckets: Buckets::default(),
            pid_label: false,
            idle_series_ttl: Seconds(Duration::from_secs(3600)),
            split: false,
            max_values: default_max_values(),
        }
    }
}

/// `histogram.max_values`'s default, as `funclatency --max-values`'.
fn default_max_values() -> usize {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// The embedded database file.
    pub path: PathBuf,
    /// Length of one archived interval: the most a crash can lose.
    pub interval: Seconds,
    /// Intervals older than this are deleted.
    pub retention: Seconds,
    /// The archive's data is kept under this many bytes (oldest intervals go first).
    pub max_size: Bytes,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_ARCHIVE),
            interval: Seconds(Duration::from_secs(10)),
            retention: Seconds(Duration::from_secs(14 * 24 * 3600)),
            max_size: Bytes(1 << 30),
        }
    }
}

/// Continuous profiling: a CPU profile of every traced process per archive interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileSection {
    /// Sample the CPU of the traced processes and archive a profile per interval.
    pub enabled: bool,
    /// Samples per second on each CPU (a low rate keeps the cost negligible; 1 to 1000).
    pub frequency: u64,
}

impl Default for ProfileSection {
    fn default() -> Self {
        Self {
            enabled: true,
            frequency: 19,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    /// OTLP/HTTP metrics endpoint, e.g. `http://127.0.0.1:4318/v1/metrics`.
    pub endpoint: HttpUrl,
    /// How often histograms are pushed.
    #[serde(default = "default_otlp_interval")]
    pub interval: Seconds,
    /// `explicit` (the Prometheus bucket bounds) or `exponential`.
    #[serde(default)]
    pub histogram: OtlpHistogram,
}

fn default_otlp_interval() -> Seconds {
    Seconds(Duration::from_secs(10))
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OtlpHistogram {
    #[default]
    Explicit,
    Exponential,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSection {
    /// The kubelet's pod list (e.g. `http://${NODE_NAME}:10255/pods`, the read-only port), to
    /// name the pods that cgroups give only by UID. Without it, pods are labelled by UID.
    /// `${NAME}` is replaced by the environment variable NAME (the downward API sets them).
    pub kubelet_pods_url: Option<HttpUrl>,
}

/// One probe: functions to trace, and the processes they are traced in. Every condition
/// given must hold; with none, every Go process that has a matching function is traced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// A name for messages (default: `probe N`).
    pub name: Option<String>,
    /// Go functions, `go:NAME` with `*`/`?` globs as in `goprobe funclatency`; `go:NAME(a T,
    /// ...)` declares the arguments `by` reads in binaries without DWARF. May be left out with
    /// `pack`.
    #[serde(default)]
    pub functions: Vec<FunctionPattern>,
    /// Label each call by argument values, as `funclatency --by` (`"r.Method,r.URL.Path"`):
    /// one more label per value on `/metrics` and in the archive.
    pub by: Option<String>,
    /// A probe pack (`goprobe packs`): its functions, labelled as it says.
    pub pack: Option<String>,
    /// With `by` or `pack`: count only the calls that pass, as `funclatency --where`
    /// (`"status >= 500"`).
    #[serde(rename = "where")]
    pub filter: Option<String>,
    /// The function patterns are regular expressions (searched in the name).
    #[serde(default)]
    pub regex: bool,
    /// The `service` label (default: the executable's file name).
    pub service: Option<String>,
    /// Globs on the executable's path as the process sees it (`*` within a path component,
    /// `**` across them).
    #[serde(default)]
    pub exe: Vec<Glob>,
    /// Process names (`comm`, as `ps -o comm` shows), globs allowed.
    #[serde(default)]
    pub process: Vec<Glob>,
    /// Container IDs (globs; `*` = any container, i.e. not host processes).
    #[serde(default)]
    pub container: Vec<Glob>,
    /// Pod names or pod UIDs (globs).
    #[serde(default)]
    pub pod: Vec<Glob>,
}

impl ProbeConfig {
    /// The patterns, compiled (`regex` decides how NAME is read), each with the parameters it
    /// declares.
    pub fn patterns(&self) -> Vec<(Pattern, Option<Vec<crate::args::DeclaredParam>>)> {
        self.functions
            .iter()
            .map(|f| {
                let (name, declared) =
                    crate::args::split_signature(&f.0).expect("checked when the config was read");
                let pattern =
                    Pattern::parse(name, self.regex).expect("checked when the config was read");
                (pattern, declared)
            })
            .collect()
    }
}

/// A duration: `10s`, `500ms`, `5m`, `7d` (humantime syntax), from more than 0 to
/// [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

/// The longest duration a config may give (100 years of 365.25 days, humantime's `100y`). Anything longer is a typo: the agent
/// adds durations to clocks and timers, and `500000000y` as `archive.interval` would never
/// tick, which turned archiving off without a word.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. \"10s\", \"500ms\", \"7d\""
            ))
        })?;
        if duration.is_zero() {
            return Err(de::Error::custom("a duration must be more than 0"));
        }
        if duration > MAX_DURATION {
            return Err(de::Error::custom(format!(
                "duration {text:?} is too long: at most 100 years"
            )));
        }
        Ok(Seconds(duration))
    }
}

/// The longest period of the agent's timers (`agent.scan_interval`, `archive.interval`,
/// `otlp.interval`): longer, the timer would in effect never fire.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The largest config file read (far more than any real one; a device or a huge file named by
/// mistake is refused instead of read until memory runs out).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The largest token file read (a Kubernetes service-account token is about 1 KiB).
pub const MAX_TOKEN_BYTES: u64 = 64 << 10;

/// The bearer token in `path` (`http.bearer_token_file`, `goprobe query --token-file`),
/// trimmed. A missing, empty, oversized or non-regular file is an error.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = goprobe_inspect::file::read_small_text(path, MAX_TOKEN_BYTES)
        .map_err(|e| format!("cannot read {}: {}", path.display(), io_message(&e)))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(token.to_string())
}

/// A size: `1GiB`, `500MB`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Bytes(n)),
            Raw::Text(text) => parse_size(&text).map(Bytes).ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid size {text:?}; write e.g. \"512MiB\", \"1GiB\", \"100MB\""
                ))
            }),
        }
    }
}

pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    Some((number * multiplier as f64) as u64)
}

/// Histogram bucket upper bounds in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets(pub Vec<f64>);

impl Default for Buckets {
    /// Powers of two from 1 µs to ~33.5 s (2^0 .. 2^25 µs): the log2 steps of bcc's table,
    /// so any quantile is known within a factor of two, from sub-microsecond calls to
    /// request handlers, in 26 buckets (+Inf) per series.
    fn default() -> Self {
        Buckets((0..26).map(|i| (1u64 << i) as f64 * 1e-6).collect())
    }
}

impl<'de> Deserialize<'de> for Buckets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bounds = Vec::<f64>::deserialize(d)?;
        if bounds.is_empty() {
            return Err(de::Error::custom("buckets must list at least one bound"));
        }
        if bounds.iter().any(|b| !b.is_finite() || *b <= 0.0) {
            return Err(de::Error::custom(
                "bucket bounds are seconds, finite and more than 0",
            ));
        }
        if bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(de::Error::custom("bucket bounds must increase"));
        }
        Ok(Buckets(bounds))
    }
}

/// A `go:NAME` function pattern, checked when read.
#[derive(Debug, Clone)]
pub struct FunctionPattern(pub String);

impl<'de> Deserialize<'de> for FunctionPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if !text.starts_with("go:") {
            return Err(de::Error::custom(format!(
                "function pattern {text:?} must start with go: (choose binaries with `exe`)"
            )));
        }
        // Checked as a glob here; `regex = true` is checked once the whole probe is read.
        let (name, _) = crate::args::split_signature(&text).map_err(de::Error::custom)?;
        Pattern::parse(name, false).map_err(de::Error::custom)?;
        Ok(FunctionPattern(text))
    }
}

/// A glob over a whole string: `*` any run of characters except `/`, `**` any run, `?` one
/// character except `/`.
#[derive(Clone)]
pub struct Glob {
    pub text: String,
    regex: Regex,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl Glob {
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty glob matches nothing".into());
        }
        let mut source = String::from("^");
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    source.push_str(".*");
                }
                '*' => source.push_str("[^/]*"),
                '?' => source.push_str("[^/]"),
                c => source.push_str(&regex::escape(&c.to_string())),
            }
        }
        source.push('$');
        let regex = Regex::new(&source).map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.into(),
            regex,
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Glob::new(&text).map_err(|e| de::Error::custom(format!("glob {text:?}: {e}")))
    }
}

/// An `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub String);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(HttpUrl(text)),
            _ => Err(de::Error::custom(format!(
                "{text:?} is not an http:// or https:// URL"
            ))),
        }
    }
}

impl Config {
    /// Read and check a config file. Any error stops here, with its location.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            goprobe_inspect::file::read_small_text(path, MAX_CONFIG_BYTES).map_err(|source| {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Self::parse(path, &text)
    }

    /// The bearer token of `http.bearer_token_file`, if one is configured: read and checked
    /// (by `--check` too), so a missing or empty file is found before the agent starts.
    pub fn token(&self) -> Result<Option<String>, String> {
        self.http
            .bearer_token_file
            .as_deref()
            .map(|path| read_token_file(path).map_err(|e| format!("http.bearer_token_file: {e}")))
            .transpose()
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let at = |offset: usize, message: String| {
            let (line, column) = line_column(text, offset);
            ConfigError::At {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            at(offset, e.message().trim().replace('\n', " "))
        })?;
        // Checks that span several values are located where the parser found the values (a
        // search of the text would also find them in comments and strings).
        let spans: Spans = toml::from_str(text).map_err(|e| at(0, e.message().to_string()))?;
        if config.probes.is_empty() {
            return Err(at(
                0,
                "no [[probe]]: the agent needs at least one probe (functions to trace)".into(),
            ));
        }
        if !(1..=1000).contains(&config.profile.frequency) {
            return Err(at(
                spans.profile.frequency.map_or(0, |f| f.span().start),
                "profile.frequency must be from 1 to 1000 (samples per second)".into(),
            ));
        }
        for (name, interval, offset) in [
            (
                "agent.scan_interval",
                config.agent.scan_interval,
                spans.agent.scan_interval.map(|s| s.span().start),
            ),
            (
                "archive.interval",
                config.archive.interval,
                spans.archive.interval.map(|s| s.span().start),
            ),
            (
                "otlp.interval",
                config
                    .otlp
                    .as_ref()
                    .map_or(default_otlp_interval(), |o| o.interval),
                spans.otlp.interval.map(|s| s.span().start),
            ),
        ] {
            if interval.0 > MAX_INTERVAL {
                return Err(at(
                    offset.unwrap_or(0),
                    format!("{name} must be at most 1 day (24h)"),
                ));
            }
        }
        for (i, probe) in config.probes.iter().enumerate() {
            let offset = spans.probe.get(i).map_or(0, |p| p.span().start);
            match (&probe.pack, probe.functions.is_empty(), &probe.by) {
                (None, true, _) => return Err(at(offset, "probe has no functions".into())),
                (Some(_), false, _) | (Some(_), _, Some(_)) => {
                    return Err(at(
                        offset,
                        "a probe with a pack takes its functions and labels from it: leave out functions and by".into(),
                    ));
                }
                (Some(name), ..) => {
                    crate::packs::pack(name).map_err(|e| at(offset, e))?;
                }
                (None, false, Some(by)) => {
                    crate::args::parse_by(by).map_err(|e| at(offset, e.to_string()))?;
                }
                (None, false, None) => {}
            }
            if let Some(filter) = &probe.filter {
                if probe.pack.is_none() && probe.by.is_none() {
                    return Err(at(offset, "where needs by or a pack".into()));
                }
                crate::args::parse_where(filter).map_err(|e| at(offset, e.to_string()))?;
            }
            if probe.regex {
                for f in &probe.functions {
                    let (name, _) = crate::args::split_signature(&f.0)
                        .map_err(|e| at(offset, e.to_string()))?;
                    Pattern::parse(name, true).map_err(|e| at(offset, e.to_string()))?;
                }
            }
        }
        if let Some(otlp) = &config.otlp
            && otlp.endpoint.0.starts_with("https://")
        {
            let offset = spans.otlp.endpoint.map_or(0, |e| e.span().start);
            return Err(at(
                offset,
                "OTLP over https is not supported; use http:// (e.g. a local collector)".into(),
            ));
        }
        Ok(config)
    }

    pub fn probe_name(&self, index: usize) -> String {
        self.probes[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("probe {}", index + 1))
    }
}

/// Where the values that [`Config::parse`] checks together are in the text. Only the values
/// are spanned; everything else is ignored here (the [`Config`] parse has checked it).
#[derive(Deserialize)]
struct Spans {
    #[serde(default)]
    probe: Vec<toml::Spanned<de::IgnoredAny>>,
    #[serde(default)]
    agent: SpansOf,
    #[serde(default)]
    archive: SpansOf,
    #[serde(default)]
    otlp: SpansOf,
    #[serde(default)]
    profile: SpansOf,
}

#[derive(Default, Deserialize)]
struct SpansOf {
    frequency: Option<toml::Spanned<de::IgnoredAny>>,
    interval: Option<toml::Spanned<de::IgnoredAny>>,
    scan_interval: Option<toml::Spanned<de::IgnoredAny>>,
    endpoint: Option<toml::Spanned<de::IgnoredAny>>,
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parse a budget as a percentage of one CPU: "1%", "0.5%", "0" (off).
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().strip_suffix('%').unwrap_or(text.trim()).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(format!(
            "{text:?} is not a share of one CPU between 0% and 100% (e.g. \"1%\"; \"0\" turns the budget off)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("agent.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn profile_section() {
        let probe = "[[probe]]\nfunctions = [\"go:main.f\"]\n";
        let c = parse(probe).unwrap();
        assert!(c.profile.enabled);
        assert_eq!(c.profile.frequency, 19);
        let c = parse(&format!(
            "[profile]\nenabled = false\nfrequency = 99\n{probe}"
        ))
        .unwrap();
        assert!(!c.profile.enabled);
        assert_eq!(c.profile.frequency, 99);
        let e = parse(&format!("[profile]\nfrequency = 0\n{probe}")).unwrap_err();
        assert!(e.contains("profile.frequency"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[[probe]]\nfunctions = [\"go:main.handle*\"]\n").unwrap();
        assert_eq!(c.http.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.archive.interval.0, Duration::from_secs(10));
        assert_eq!(c.histogram.buckets.0.len(), 26);
        assert_eq!(c.probes.len(), 1);
        assert!(c.probes[0].patterns()[0].0.matches("main.handleX"));
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
[agent]
scan_interval = "200ms"
[http]
listen = "0.0.0.0:9000"
bearer_token_file = "/etc/goprobe/token"
[histogram]
buckets = [0.001, 0.01, 0.1]
pid_label = true
idle_series_ttl = "10m"
[archive]
path = "/tmp/a.redb"
interval = "1s"
retention = "7d"
max_size = "100MiB"
[otlp]
endpoint = "http://127.0.0.1:4318/v1/metrics"
histogram = "exponential"
[[probe]]
name = "web"
functions = ["go:net/http.(*conn).serve", "go:main.*"]
service = "web"
exe = ["/usr/local/bin/*"]
process = ["web*"]
container = ["*"]
pod = ["web-*"]
"#,
        )
        .unwrap();
        assert_eq!(c.archive.max_size.0, 100 << 20);
        assert_eq!(c.histogram.idle_series_ttl.0, Duration::from_secs(600));
        assert_eq!(c.archive.retention.0, Duration::from_secs(7 * 86400));
        assert_eq!(c.otlp.unwrap().histogram, OtlpHistogram::Exponential);
        let p = &c.probes[0];
        assert!(p.exe[0].matches("/usr/local/bin/web"));
        assert!(!p.exe[0].matches("/usr/local/bin/sub/web"));
        assert!(p.process[0].matches("webd"));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("[[probe]]\nfunctions = [\"go:main.x\"]\n\n[archive]\ninterval = \"10x\"\n")
            .unwrap_err();
        assert!(e.starts_with("agent.toml:5:12: "), "{e}");
        assert!(e.contains("invalid duration \"10x\""), "{e}");
        let e = parse("[[probe]]\nfunctions = [\"main.x\"]\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:"), "{e}");
        assert!(e.contains("must start with go:"), "{e}");
        let e =
            parse("[http]\nlisten = \"localhost\"\n[[probe]]\nfunctions=[\"go:a\"]\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:10: "), "{e}");
        let e =
            parse("[[probe]]\nfunctions = [\"go:a\"]\nexe = \"/bin/x\"\nbogus = 1\n").unwrap_err();
        assert!(e.starts_with("agent.toml:"), "{e}");
        let e = parse("[http]\n").unwrap_err();
        assert!(e.contains("no [[probe]]"), "{e}");
        let e = parse("[[probe]]\nfunctions = [\"go:(\"]\nregex = true\n").unwrap_err();
        assert!(e.starts_with("agent.toml:1:1: "), "{e}");
        assert!(e.contains("invalid regular expression"), "{e}");
        let e = parse("[histogram]\nbuckets = [0.1, 0.01]\n[[probe]]\nfunctions=[\"go:a\"]\n")
            .unwrap_err();
        assert!(e.contains("must increase"), "{e}");
        assert!(!e.contains('\n'));
    }

    /// `500000000y` as `archive.interval` parsed, and the archive timer never fired: archiving
    /// was off without a word. Durations past 100 years, and intervals past a day, are errors.
    #[test]
    fn absurd_durations_are_refused() {
        let probe = "[[probe]]\nfunctions = [\"go:main.f\"]\n";
        let e = parse(&format!("[archive]\ninterval = \"500000000y\"\n{probe}")).unwrap_err();
        assert!(e.starts_with("agent.toml:2:12: "), "{e}");
        assert!(e.contains("too long: at most 100 years"), "{e}");
        let e = parse(&format!("[archive]\nretention = \"101y\"\n{probe}")).unwrap_err();
        assert!(e.contains("too long"), "{e}");
        let e = parse(&format!(
            "{probe}[archive]\n# 10y would do\ninterval = \"10y\"\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("agent.toml:5:12: "), "{e}");
        assert!(e.contains("archive.interval must be at most 1 day"), "{e}");
        let e = parse(&format!("[agent]\nscan_interval = \"2d\"\n{probe}")).unwrap_err();
        assert!(
            e.contains("agent.scan_interval must be at most 1 day"),
            "{e}"
        );
        let e = parse(&format!(
            "{probe}[otlp]\nendpoint = \"http://x/v1/metrics\"\ninterval = \"25h\"\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("agent.toml:5:12: "), "{e}");
        let e = parse(&format!(
            "[archive]\ninterval = \"99999999999999999999999999s\"\n{probe}"
        ))
        .unwrap_err();
        assert!(e.contains("invalid duration"), "{e}");
        let c = parse(&format!(
            "[archive]\ninterval = \"1d\"\nretention = \"100y\"\n{probe}"
        ))
        .unwrap();
        assert_eq!(c.archive.interval.0, MAX_INTERVAL);
        assert_eq!(c.archive.retention.0, MAX_DURATION);
    }

    /// Locations came from searching the text, so a `[[probe]]` or `frequency` in a comment
    /// (or a string) moved an error to the wrong line.
    #[test]
    fn locations_ignore_comments_and_strings() {
        let e = parse(
            "# copy a [[probe]] from the README\n# frequency = 99\n\n[[probe]]\nname = \"[[probe]]\"\nfunctions = [\"go:(\"]\nregex = true\n",
        )
        .unwrap_err();
        assert!(e.starts_with("agent.toml:4:1: "), "{e}");
        let e =
            parse("# [[probe]]\n[[probe]]\nfunctions = [\"go:a\"]\n[[probe]]\nfunctions = []\n")
                .unwrap_err();
        assert!(e.starts_with("agent.toml:4:1: "), "{e}");
        assert!(e.contains("probe has no functions"), "{e}");
        let e = parse(
            "# frequency: samples per second\n[[probe]]\nfunctions = [\"go:a\"]\n[profile]\nfrequency = 0\n",
        )
        .unwrap_err();
        assert!(e.starts_with("agent.toml:5:13: "), "{e}");
        // Inline tables of probes are located too.
        let e = parse("probe = [{ functions = [\"go:a\"] }, { functions = [] }]\n").unwrap_err();
        assert!(e.starts_with("agent.toml:1:"), "{e}");
        assert!(!e.starts_with("agent.toml:1:1: "), "{e}");
    }

    /// The config and token files: regular files only (a FIFO blocked, `/dev/zero` was read
    /// until memory ran out), and a token file that is missing, empty or a directory is an
    /// error (`--check` accepted them).
    #[test]
    fn config_and_token_files_are_checked() {
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "cannot read config /dev/zero: not a regular file (a character device)"
        );
        let dir = std::env::temp_dir().join(format!("goprobe-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("agent.toml");
        let token = dir.join("token");
        let with_token = |path: &Path| {
            std::fs::write(
                &config,
                format!(
                    "[http]\nbearer_token_file = \"{}\"\n[[probe]]\nfunctions = [\"go:a\"]\n",
                    path.display()
                ),
            )
            .unwrap();
            Config::load(&config).unwrap().token()
        };
        let e = with_token(&token).unwrap_err();
        assert!(e.starts_with("http.bearer_token_file: cannot read "), "{e}");
        assert!(e.ends_with("No such file or directory"), "{e}");
        std::fs::write(&token, " \n").unwrap();
        assert!(with_token(&token).unwrap_err().ends_with("is empty"));
        assert!(with_token(&dir).unwrap_err().ends_with("is a directory"));
        assert!(
            with_token(Path::new("/dev/zero"))
                .unwrap_err()
                .ends_with("not a regular file (a character device)")
        );
        std::fs::write(&token, "s3cret\n").unwrap();
        assert_eq!(with_token(&token).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&token, vec![b'x'; MAX_TOKEN_BYTES as usize + 1]).unwrap();
        assert!(with_token(&token).unwrap_err().contains("larger than"));
        std::fs::write(&config, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = Config::load(&config).unwrap_err().to_string();
        assert!(e.ends_with("larger than 1048576 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn globs() {
        let g = Glob::new("/opt/**/bin/*").unwrap();
        assert!(g.matches("/opt/a/b/bin/x"));
        assert!(!g.matches("/opt/a/b/bin/x/y"));
        assert!(Glob::new("").is_err());
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1 XB"), None);
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("1%"), Ok(0.01));
        assert_eq!(parse_percent(" 0.5 % "), Ok(0.005));
        assert_eq!(parse_percent("0"), Ok(0.0));
        for bad in ["", "%", "-1%", "101%", "nan%", "inf", "1e400%", "one"] {
            assert!(parse_percent(bad).is_err(), "{bad:?}");
        }
    }
}

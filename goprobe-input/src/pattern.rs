//! Function patterns as users write them (`go:NAME`, `PATH:NAME`, globs or regular
//! expressions) and the names suggested when nothing matches.
use std::path::PathBuf;

use regex::Regex;

#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("pattern {} has no function name: use go:NAME or PATH:NAME, e.g. 'go:main.handle'", quote(.0))]
    NoName(String),
    #[error(
        "pattern {} must start with go: or PATH: (e.g. 'go:fmt.Println' or '/usr/bin/app:main.run')",
        quote(.0)
    )]
    NoPrefix(String),
    #[error("invalid regular expression {}: {}", quote(.pattern), regex_message(.error))]
    Regex {
        pattern: String,
        error: regex::Error,
    },
}

/// The longest pattern quoted whole in a message.
const MAX_QUOTED: usize = 200;

/// `text` quoted for a message (as `{:?}` does); a longer one than [`MAX_QUOTED`] characters is
/// cut there, with its length, so a message stays readable whatever was typed.
pub fn quote(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_QUOTED {
        return format!("{text:?}");
    }
    let start: String = text.chars().take(MAX_QUOTED).collect();
    format!("{start:?}... ({count} characters)")
}

/// The regex crate's error in one line: its syntax errors draw the pattern over several lines
/// with a caret, and end with `error: WHAT`, which is what a one-line message keeps.
fn regex_message(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_string()
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
        let matcher = Regex::new(&source).map_err(|error| PatternError::Regex {
            pattern: name.into(),
            error,
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

    /// The pattern's name quoted for a message (see [`quote`]).
    pub fn quoted(&self) -> String {
        quote(&self.name)
    }

    pub fn matches(&self, function: &str) -> bool {
        self.matcher.is_match(function)
    }

    /// Names that the user may have meant, best first: names containing the pattern's literal
    /// text, then the closest by edit distance.
    ///
    /// Edit distances cost the product of the lengths, once per name in the binary: a pattern
    /// longer than [`MAX_SUGGESTION_LEN`] characters (no Go name a user types is) gets no
    /// suggestions, where a 100,000-character one took minutes.
    pub fn closest<'a>(&self, names: impl Iterator<Item = &'a str>, limit: usize) -> Vec<String> {
        if self.name.chars().nth(MAX_SUGGESTION_LEN).is_some() {
            return Vec::new();
        }
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

/// The longest pattern that [`Pattern::closest`] looks for close names of.
pub const MAX_SUGGESTION_LEN: usize = 256;

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

    /// The regex crate's syntax errors span several lines; the agent's config errors (which
    /// quote this one) must stay one line (found by the parse_config fuzz target).
    #[test]
    fn regex_errors_are_one_line() {
        let e = Pattern::parse("go:^ma)$", true).unwrap_err().to_string();
        assert_eq!(e, "invalid regular expression \"^ma)$\": unopened group");
        let e = Pattern::parse("go:(", true).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.ends_with(": unclosed group"), "{e}");
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

    #[test]
    fn long_patterns_are_quoted_short() {
        assert_eq!(quote("main.f"), "\"main.f\"");
        let long = "x".repeat(100_000);
        let q = quote(&long);
        assert!(q.ends_with("\"... (100000 characters)"), "{q}");
        assert!(q.len() < 250);
        let e = Pattern::parse(&format!("go:{long}("), true)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{e}");
    }

    /// A 100,000-character pattern spent minutes in edit distances against every name.
    #[test]
    fn a_huge_pattern_gets_no_suggestions_at_once() {
        let names: Vec<String> = (0..20_000).map(|i| format!("main.function{i}")).collect();
        let p = Pattern::parse(&format!("go:{}", "x".repeat(100_000)), false).unwrap();
        let start = std::time::Instant::now();
        assert!(p.closest(names.iter().map(String::as_str), 5).is_empty());
        assert!(start.elapsed() < std::time::Duration::from_millis(100));
        // Up to the limit, suggestions are made as before.
        let long = format!("main.function1{}", "y".repeat(MAX_SUGGESTION_LEN - 15));
        let p = Pattern::parse(&format!("go:{long}"), false).unwrap();
        assert_eq!(p.closest(names.iter().map(String::as_str), 1).len(), 1);
    }
}

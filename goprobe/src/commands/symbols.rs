//! `goprobe symbols`: what can be traced in a binary, and how.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::{
    inspect::BinaryIndex, outputs::symbols as symbols_report, plan::Pattern, targets::Process,
};

/// `goprobe symbols`'s arguments.
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

const SYMBOLS_EXAMPLES: &str = "\
Examples:
  goprobe symbols /usr/bin/caddy 'net/http.*'
  goprobe symbols 4242 'main.*' --json";

pub fn run(args: SymbolsArgs) -> anyhow::Result<()> {
    let path = match args.binary.parse::<u32>() {
        Ok(pid) if !std::path::Path::new(&args.binary).exists() => Process::get(pid)?.exe,
        _ => PathBuf::from(&args.binary),
    };
    let pattern = args
        .pattern
        .as_deref()
        .map(|p| Pattern::name_only(p, args.regex))
        .transpose()?;
    let index = BinaryIndex::open(&path)?;
    let filter = |name: &str| pattern.as_ref().is_none_or(|p| p.matches(name));
    let mut stdout = std::io::stdout().lock();
    let listed = symbols_report::write_symbols(&mut stdout, &index, &filter, args.json)
        .and_then(|n| {
            Ok(n + symbols_report::write_inlined(&mut stdout, &index, &filter, args.json)?)
        })
        .context("writing the list")?;
    if listed == 0
        && let Some(pattern) = &pattern
    {
        let closest = pattern.closest(index.functions.iter().map(|f| f.name.as_str()), 5);
        let hint = if closest.is_empty() {
            String::new()
        } else {
            format!("; closest names: {}", closest.join(", "))
        };
        anyhow::bail!(
            "no function in {} matches {}{hint}",
            path.display(),
            pattern.quoted(),
        );
    }
    Ok(())
}

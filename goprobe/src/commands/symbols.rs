//! `goprobe symbols`: what can be traced in a binary, and how.
use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    cli::SymbolsArgs, inspect::BinaryIndex, outputs::symbols as symbols_report, plan::Pattern,
    targets::Process,
};

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
        anyhow::bail!(
            "no function in {} matches {:?}; closest names: {}",
            path.display(),
            pattern.name,
            closest.join(", ")
        );
    }
    Ok(())
}

//! `goprobe packs`: the ready probe sets of `funclatency --pack`, and, for a binary or a PID,
//! which of them apply (its functions are there, and their arguments can be read).
use std::path::PathBuf;

use clap::Args;

use crate::{
    inspect::BinaryIndex,
    plan::{
        Pattern,
        args::{PACKS, pack_request, plan_args},
    },
    targets::Process,
};

/// `goprobe packs`'s arguments.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = PACKS_EXAMPLES)]
pub struct PacksArgs {
    /// A Go binary, or the PID of a running Go process: say which packs apply to it
    pub binary: Option<String>,
}

const PACKS_EXAMPLES: &str = "\
Examples:
  goprobe packs
  goprobe packs /usr/bin/caddy
  goprobe funclatency -m --pack http-server -p 4242";

pub fn run(args: PacksArgs) -> anyhow::Result<()> {
    let Some(binary) = args.binary else {
        for pack in PACKS {
            println!("{:<12} {}", pack.name, pack.about);
            println!("{:<12} functions {}, by {}", "", pack.functions, pack.by);
        }
        return Ok(());
    };
    let path = match binary.parse::<u32>() {
        Ok(pid) if !std::path::Path::new(&binary).exists() => Process::get(pid)?.exe,
        _ => PathBuf::from(&binary),
    };
    let index = BinaryIndex::open(&path)?;
    for pack in PACKS {
        let pattern = Pattern::name_only(pack.functions, true)?;
        let request = pack_request(pack);
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for f in index.functions.iter().filter(|f| pattern.matches(&f.name)) {
            match plan_args(&index, &f.name, &request) {
                Ok(_) => found.push(f.name.as_str()),
                Err(e) => problems.push(format!("{}: {e}", f.name)),
            }
        }
        let verdict = match (found.is_empty(), problems.is_empty()) {
            (false, _) => format!("applies ({})", found.join(", ")),
            (true, false) => format!("does not apply: {}", problems.join("; ")),
            (true, true) => "does not apply: none of its functions is in the binary".into(),
        };
        println!("{:<12} {verdict}", pack.name);
    }
    Ok(())
}

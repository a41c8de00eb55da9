//! A function's instructions as `goprobe dev insns` decodes them: which ones the kernel
//! emulates, and where goprobe places its entry and return probes. The sections pick the sites
//! they measure from here, and print where goprobe probed each function they time.

use std::path::Path;

use anyhow::{Context, Result};

use super::Env;
use super::json::Json;
use crate::util;

/// A function's instructions as `goprobe dev insns` prints them.
pub struct Insn {
    pub function_addr: u64,
    pub offset: u64,
    pub bytes: String,
    pub mnemonic: String,
    pub text: String,
    pub kernel_emulates: bool,
    pub goprobe_entry: Option<String>,
    pub goprobe_return: bool,
}

pub fn insns(env: &Env, bin: &Path, function: &str) -> Result<Vec<Insn>> {
    let out = util::stdout(
        util::cmd(&env.goprobe)
            .args(["dev", "insns"])
            .arg(bin)
            .arg(function),
    )?;
    out.lines()
        .map(|l| {
            let j = Json::parse(l)?;
            Ok(Insn {
                function_addr: j.u64("function_addr").context("function_addr")?,
                offset: j.u64("offset").context("offset")?,
                bytes: j.str("bytes").unwrap_or_default().to_string(),
                mnemonic: j.str("mnemonic").unwrap_or_default().to_string(),
                text: j.str("text").unwrap_or_default().to_string(),
                kernel_emulates: j.bool("kernel_emulates").unwrap_or(false),
                goprobe_entry: j.str("goprobe_entry").map(str::to_string),
                goprobe_return: j.bool("goprobe_return").unwrap_or(false),
            })
        })
        .collect()
}

/// goprobe's probe sites in a function: (entry kind, offsets of every site).
pub fn goprobe_sites(insns: &[Insn]) -> (String, Vec<u64>) {
    let kind = insns
        .iter()
        .find_map(|i| i.goprobe_entry.clone())
        .unwrap_or_default();
    let offsets = insns
        .iter()
        .filter(|i| i.goprobe_entry.is_some() || i.goprobe_return)
        .map(|i| i.offset)
        .collect();
    (kind, offsets)
}

/// Where goprobe probes a function, in words: "jbe + RET", "jge (early) + RET", ...
pub fn describe_sites(insns: &[Insn]) -> String {
    let entry = insns
        .iter()
        .find(|i| i.goprobe_entry.is_some())
        .map(|i| {
            let how = match i.goprobe_entry.as_deref() {
                Some("stack_check_branch") => "stack-check",
                Some("emulated_prefix") => "early",
                _ => "start",
            };
            format!("`{}` ({how})", i.mnemonic)
        })
        .unwrap_or_default();
    let returns: Vec<String> = insns
        .iter()
        .filter(|i| i.goprobe_return)
        .map(|i| format!("`{}`", i.mnemonic))
        .collect();
    format!("entry {entry}, return {}", returns.join(", "))
}

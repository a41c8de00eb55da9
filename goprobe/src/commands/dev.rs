//! `goprobe dev`: hidden helpers for `cargo xtask bench`, not part of the user interface.
//!
//! * `goprobe dev insns BINARY FUNCTION`: the function's instructions, one JSON object a line,
//!   with the file offset a probe on each would take and which sites goprobe itself probes.
//! * `goprobe dev attach (-p PID | -b BINARY) OFFSET...`: probes that do nothing at those file
//!   offsets (which must be instruction boundaries: take them from `dev insns`), until SIGINT or
//!   SIGTERM, or until the process exits. What a probe site costs by itself, per instruction.
use std::{io::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use iced_x86::{Decoder, DecoderOptions, Formatter as _, Instruction, IntelFormatter};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    inspect::{Arch, BinaryIndex, EntryKind, disasm},
    kernel::{AttachMode, BareProbes, Site},
    targets::{self, Process},
};

/// `goprobe dev`'s arguments.
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

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    match args.command {
        DevCommand::Insns(args) => insns(args),
        DevCommand::Attach(args) => attach(args),
    }
}

#[derive(serde::Serialize)]
struct Insn {
    /// The function's address: names can repeat (an assembly function and its ABI wrapper).
    function_addr: u64,
    vaddr: u64,
    offset: u64,
    len: usize,
    bytes: String,
    mnemonic: String,
    text: String,
    /// Whether the kernel emulates a probe here rather than single-stepping it (as goprobe
    /// believes; `cargo xtask bench` measures it).
    kernel_emulates: bool,
    /// goprobe's entry site for this function, and its kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    goprobe_entry: Option<EntryKind>,
    /// One of goprobe's return sites.
    goprobe_return: bool,
}

fn insns(args: DevInsnsArgs) -> anyhow::Result<()> {
    let index = BinaryIndex::open(&args.binary)?;
    if index.arch != Arch::X86_64 {
        bail!("only x86-64 is decoded");
    }
    let functions: Vec<_> = index
        .functions
        .iter()
        .filter(|f| f.name == args.function)
        .collect();
    if functions.is_empty() {
        bail!("no function {:?}", args.function);
    }
    let mut out = std::io::stdout().lock();
    for function in functions {
        let code = index
            .function_code(function)
            .context("the function's code is not in the file")?;
        let sites = index.probe_sites(function)?;
        let mut decoder = Decoder::with_ip(64, code, function.addr, DecoderOptions::NONE);
        let mut formatter = IntelFormatter::new();
        let mut instr = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut instr);
            if instr.is_invalid() {
                bail!("undecodable instruction at {:#x}", instr.ip());
            }
            let start = (instr.ip() - function.addr) as usize;
            let bytes: String = code[start..start + instr.len()]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut text = String::new();
            formatter.format(&instr, &mut text);
            let row = Insn {
                function_addr: function.addr,
                vaddr: instr.ip(),
                offset: index
                    .vaddr_to_file_offset(instr.ip())
                    .context("instruction outside the executable segments")?,
                len: instr.len(),
                bytes,
                mnemonic: format!("{:?}", instr.mnemonic()).to_lowercase(),
                text,
                kernel_emulates: disasm::kernel_emulates(&instr, &code[start..start + instr.len()]),
                goprobe_entry: (sites.entry == instr.ip()).then_some(sites.entry_kind),
                goprobe_return: sites.return_sites.contains(&instr.ip()),
            };
            serde_json::to_writer(&mut out, &row)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn attach(args: DevAttachArgs) -> anyhow::Result<()> {
    let mode = match std::env::var("GOPROBE_ATTACH").as_deref() {
        Ok("multi") => Some(AttachMode::Multi),
        Ok("single") | Ok("per-site") => Some(AttachMode::PerSite),
        _ => None,
    };
    let (target, pid): (PathBuf, Option<u32>) = match (args.pid, &args.binary) {
        (Some(pid), None) => (Process::get(pid)?.exe, Some(pid)),
        (None, Some(path)) => (path.clone(), None),
        _ => bail!("give -p PID or -b BINARY"),
    };
    let sites: Vec<Site> = args
        .offsets
        .iter()
        .map(|o| parse_offset(o).map(|offset| Site { offset, cookie: 0 }))
        .collect::<anyhow::Result<_>>()?;
    let mut probes = BareProbes::load(mode)?;
    let attachment = probes.attach(&target, pid, &sites)?;
    eprintln!("goprobe dev: attached {} sites", sites.len());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = poll.tick() => if pid.is_some_and(|p| !targets::is_alive(p)) { break },
            }
        }
        anyhow::Ok(())
    })?;
    probes.detach(attachment);
    Ok(())
}

fn parse_offset(s: &str) -> anyhow::Result<u64> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.with_context(|| format!("bad file offset {s:?}"))
}

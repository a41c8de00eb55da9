//! Builds the kernel programs (`goprobe-ebpf`) with the pinned nightly named in
//! `goprobe-ebpf/rust-toolchain.toml`, so goprobe can embed the object with `include_bytes!`.
use std::{fs, path::Path};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../goprobe-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo::rerun-if-changed={}", toolchain_file.display());
    let text = fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {}", toolchain_file.display()))?;
    let channel = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("channel"))
        .and_then(|rest| rest.split('"').nth(1))
        .ok_or_else(|| anyhow!("no channel in {}", toolchain_file.display()))?;
    let root_dir = ebpf_dir.canonicalize()?;
    let root_dir = root_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "goprobe-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(channel),
    )
}

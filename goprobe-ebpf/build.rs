//! Declares aya's `bpf_target_arch` cfg (set by aya-build, see goprobe/build.rs), which
//! `src/arch.rs` uses to pick the registers of the architecture the programs are built for.
fn main() {
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"mips\", \"mips64\", \"powerpc64\", \"riscv64\", \"s390x\", \"loongarch64\"))"
    );
}

//! The kernel-side programs live in `main.rs` (built for `bpfel-unknown-none` by agent/build.rs).
#![no_std]
